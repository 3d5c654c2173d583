//! Typed, validated TOML configuration. String values may use `${env:NAME}`
//! (`${env:NAME:-default}` falls back when unset or empty), `${file:PATH}`,
//! `${secret:NAME}` and `${secret:NAME#json_key}` (AWS Secrets Manager, through
//! [`SecretStore`]; the expander is the workspace's one, [`config_refs::expand`]); an unset variable, unreadable file or missing secret is
//! an error naming the key. Errors never show a value read from a secret or a file.
//! Unknown keys are errors.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use config_refs::{SecretStore, Sources, NO_SECRET_STORE};
use mcp_audit::AuditConfig;

use serde::Deserialize;
use url::Url;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Parse(String),
    #[error("`{key}`: {message}")]
    Invalid { key: String, message: String },
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        message: message.into(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// The sidecar is the authorization server for every client (default).
    #[default]
    Issuer,
    /// Standard (non-loopback) clients are pointed at Google directly.
    GoogleDirect,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Pretty,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    #[serde(default = "default_listen")]
    pub listen: String,
    /// The issuer identifier and public base URL. Default: `http://{listen}`.
    #[serde(default)]
    pub issuer: Option<String>,
    #[serde(default)]
    pub mode: Mode,
    /// Take the client address from this header (last entry), e.g. `x-forwarded-for`
    /// behind a load balancer. Unset: the TCP peer address.
    #[serde(default)]
    pub client_ip_header: Option<String>,
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    #[serde(default)]
    pub log_format: LogFormat,
    /// Slow clients: a request body not complete this long after its head is answered
    /// 408 and its connection closed.
    #[serde(default = "default_body_timeout")]
    pub body_timeout_s: u64,
    /// A request head (on a new or an idle kept-alive connection) not complete this
    /// long after the connection was ready for it: the connection is closed.
    #[serde(default = "default_header_timeout")]
    pub header_timeout_s: u64,
    /// Connections served at once; more wait in the listen backlog until one ends.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
}

fn default_body_timeout() -> u64 {
    10
}
fn default_header_timeout() -> u64 {
    20
}
fn default_max_connections() -> usize {
    4096
}

fn default_listen() -> String {
    "127.0.0.1:8090".into()
}
fn default_max_body() -> usize {
    64 * 1024
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `postgres://user[:password]@host:port/db`.
    pub url: String,
    /// Schema holding the sidecar's tables (created if missing).
    #[serde(default = "default_schema")]
    pub schema: String,
    #[serde(default = "default_pool")]
    pub pool_size: usize,
    /// How often expired rows (sign-ins, codes, sessions, clients, …) are deleted.
    #[serde(default = "default_cleanup_interval")]
    pub cleanup_interval_s: u64,
}

fn default_cleanup_interval() -> u64 {
    300
}

fn default_schema() -> String {
    "mcp_oauth".into()
}
fn default_pool() -> usize {
    16
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceConfig {
    /// The protected resource's canonical URI (RFC 8707), e.g. the gateway's `/mcp` URL.
    pub url: String,
    /// Shown on the consent page.
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthorizationConfig {
    /// Refuse authorization requests without `resource` (with one resource configured
    /// and this `false`, that resource is assumed).
    #[serde(default = "yes")]
    pub require_resource: bool,
    /// Published as `scopes_supported`; requested scopes outside it are ignored.
    #[serde(default = "default_scopes")]
    pub scopes_supported: Vec<String>,
    /// Granted when a client asks for none of the supported scopes.
    #[serde(default = "default_scope")]
    pub default_scope: String,
    /// How long an approval is remembered per user, client and resource (for the
    /// scopes approved).
    #[serde(default = "default_consent_days")]
    pub consent_ttl_days: u32,
    /// Lifetime of an unfinished sign-in (authorize → Google → callback).
    #[serde(default = "default_pending")]
    pub pending_ttl_s: u64,
}

impl Default for AuthorizationConfig {
    fn default() -> Self {
        AuthorizationConfig {
            require_resource: true,
            scopes_supported: default_scopes(),
            default_scope: default_scope(),
            consent_ttl_days: default_consent_days(),
            pending_ttl_s: default_pending(),
        }
    }
}

fn yes() -> bool {
    true
}
fn default_scopes() -> Vec<String> {
    vec!["mcp".into(), "offline_access".into()]
}
fn default_scope() -> String {
    "mcp".into()
}
fn default_consent_days() -> u32 {
    90
}
fn default_pending() -> u64 {
    600
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokensConfig {
    #[serde(default = "default_access_ttl")]
    pub access_token_ttl_s: u64,
    /// Absolute lifetime of a refresh-token family (a sign-in).
    #[serde(default = "default_refresh_ttl")]
    pub refresh_token_ttl_s: u64,
    #[serde(default = "default_code_ttl")]
    pub code_ttl_s: u64,
    /// PKCS#8 PEM of the P-256 key that signs access tokens (ES256). Unset: a key is
    /// generated on first start and kept in Postgres.
    #[serde(default)]
    pub signing_key: Option<String>,
}

impl Default for TokensConfig {
    fn default() -> Self {
        TokensConfig {
            access_token_ttl_s: default_access_ttl(),
            refresh_token_ttl_s: default_refresh_ttl(),
            code_ttl_s: default_code_ttl(),
            signing_key: None,
        }
    }
}

fn default_access_ttl() -> u64 {
    600
}
fn default_refresh_ttl() -> u64 {
    30 * 24 * 3600
}
fn default_code_ttl() -> u64 {
    60
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientsConfig {
    /// Non-loopback redirect URIs clients may use (exact match).
    #[serde(default)]
    pub allowed_redirect_uris: Vec<String>,
    /// Dynamic registrations allowed per source address per minute.
    #[serde(default = "default_reg_rate")]
    pub registration_per_minute: u32,
    /// Let Client ID Metadata Document fetches reach private and loopback addresses
    /// (tests and local runs only).
    #[serde(default)]
    pub allow_private_cimd: bool,
    /// Accept `http://` Client ID Metadata Document URLs (tests and local runs only).
    #[serde(default)]
    pub allow_http_cimd: bool,
    #[serde(default = "default_cimd_bytes")]
    pub cimd_max_bytes: usize,
    #[serde(default = "default_cimd_timeout")]
    pub cimd_timeout_ms: u64,
    /// How long a fetched metadata document is trusted when its response carries no
    /// usable `Cache-Control: max-age` (bounded to 1 min … 1 day either way).
    #[serde(default = "default_cimd_cache")]
    pub cimd_cache_s: u64,
    /// Longest a fetched metadata document is trusted, whatever its `Cache-Control`;
    /// past it the cached client is forgotten and fetched again when next used.
    #[serde(default = "default_cimd_max_cache")]
    pub cimd_max_cache_s: u64,
    /// A dynamic registration never used to obtain a token is deleted this long after
    /// it was made (a used one is kept).
    #[serde(default = "default_unused_registration_ttl")]
    pub unused_registration_ttl_s: u64,
}

fn default_cimd_max_cache() -> u64 {
    86_400
}
fn default_unused_registration_ttl() -> u64 {
    86_400
}

impl Default for ClientsConfig {
    fn default() -> Self {
        ClientsConfig {
            allowed_redirect_uris: Vec::new(),
            registration_per_minute: default_reg_rate(),
            allow_private_cimd: false,
            allow_http_cimd: false,
            cimd_max_bytes: default_cimd_bytes(),
            cimd_timeout_ms: default_cimd_timeout(),
            cimd_cache_s: default_cimd_cache(),
            cimd_max_cache_s: default_cimd_max_cache(),
            unused_registration_ttl_s: default_unused_registration_ttl(),
        }
    }
}

fn default_reg_rate() -> u32 {
    20
}
fn default_cimd_bytes() -> usize {
    16 * 1024
}
fn default_cimd_timeout() -> u64 {
    3000
}
fn default_cimd_cache() -> u64 {
    3600
}

/// `[rate_limit]`: the per-address budget of unauthenticated lookups (`/authorize`,
/// and `/token` with a metadata-document client not in the cache).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Lookups an address may make at once.
    #[serde(default = "default_lookups_burst")]
    pub lookups_burst: u32,
    /// Lookups per second an address may keep up.
    #[serde(default = "default_lookups_per_second")]
    pub lookups_per_second: f64,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            lookups_burst: default_lookups_burst(),
            lookups_per_second: default_lookups_per_second(),
        }
    }
}

fn default_lookups_burst() -> u32 {
    20
}
fn default_lookups_per_second() -> f64 {
    1.0
}

/// Checks the abuse limits of `[server]`, `[store]`, `[clients]` and `[rate_limit]`.
fn validate_limits(raw: &RawConfig) -> Result<(), ConfigError> {
    let in_range = |key: &str, v: u64, lo: u64, hi: u64| {
        if v < lo || v > hi {
            return Err(invalid(key, format!("must be {lo} … {hi}")));
        }
        Ok(())
    };
    in_range(
        "store.cleanup_interval_s",
        raw.store.cleanup_interval_s,
        1,
        86_400,
    )?;
    let c = &raw.clients;
    in_range(
        "clients.cimd_max_cache_s",
        c.cimd_max_cache_s,
        1,
        7 * 86_400,
    )?;
    in_range(
        "clients.unused_registration_ttl_s",
        c.unused_registration_ttl_s,
        1,
        365 * 86_400,
    )?;
    in_range(
        "rate_limit.lookups_burst",
        raw.rate_limit.lookups_burst.into(),
        1,
        100_000,
    )?;
    let rate = raw.rate_limit.lookups_per_second;
    if !(rate.is_finite() && (0.001..=10_000.0).contains(&rate)) {
        return Err(invalid(
            "rate_limit.lookups_per_second",
            "must be 0.001 … 10000",
        ));
    }
    Ok(())
}

fn validate_server_limits(s: &ServerConfig) -> Result<(), ConfigError> {
    if s.body_timeout_s == 0 || s.body_timeout_s > 300 {
        return Err(invalid("server.body_timeout_s", "must be 1 … 300"));
    }
    if s.header_timeout_s == 0 || s.header_timeout_s > 300 {
        return Err(invalid("server.header_timeout_s", "must be 1 … 300"));
    }
    if s.max_connections == 0 || s.max_connections > 1_000_000 {
        return Err(invalid("server.max_connections", "must be 1 … 1000000"));
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum CredentialSource {
    /// No Directory API access: users get no groups.
    #[default]
    None,
    /// A service-account JSON key (domain-wide delegation to `admin_subject`).
    ServiceAccountKey,
    /// Workload Identity Federation from AWS, then service-account impersonation.
    WorkloadIdentity,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CredentialsConfig {
    #[serde(default)]
    pub source: CredentialSource,
    /// Service-account key file (JSON, as downloaded from Google Cloud).
    #[serde(default)]
    pub key_file: Option<String>,
    /// The same JSON inline (typically `${env:…}`).
    #[serde(default)]
    pub key_json: Option<String>,
    /// Token endpoint for the JWT-bearer grant (default: the key's `token_uri`, then
    /// Google's token endpoint).
    #[serde(default)]
    pub token_uri: Option<String>,
    /// Workload identity: the service account to impersonate.
    #[serde(default)]
    pub service_account: Option<String>,
    /// Workload identity: the provider audience,
    /// `//iam.googleapis.com/projects/N/locations/global/workloadIdentityPools/P/providers/R`.
    #[serde(default)]
    pub audience: Option<String>,
    #[serde(default = "default_sts")]
    pub sts_endpoint: String,
    #[serde(default = "default_iam")]
    pub iam_endpoint: String,
    /// AWS region for the signed `GetCallerIdentity` (default: `AWS_REGION`, then
    /// `us-east-1`).
    #[serde(default)]
    pub aws_region: Option<String>,
}

fn default_sts() -> String {
    "https://sts.googleapis.com/v1/token".into()
}
fn default_iam() -> String {
    "https://iamcredentials.googleapis.com".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoogleConfig {
    #[serde(default = "default_google_issuer")]
    pub issuer: String,
    pub client_id: String,
    #[serde(default)]
    pub client_secret: Option<String>,
    /// Workspace domains (`hd`) allowed to sign in.
    pub allowed_domains: Vec<String>,
    /// When not empty, a user must be in at least one of these groups.
    #[serde(default)]
    pub allowed_groups: Vec<String>,
    /// `hd` sent to Google (default: the only allowed domain, or `*`).
    #[serde(default)]
    pub hd_hint: Option<String>,
    #[serde(default)]
    pub authorization_endpoint: Option<String>,
    #[serde(default)]
    pub token_endpoint: Option<String>,
    #[serde(default)]
    pub jwks_uri: Option<String>,
    #[serde(default = "default_directory")]
    pub directory_api_base: String,
    /// The Workspace admin the service account acts as (domain-wide delegation).
    #[serde(default)]
    pub admin_subject: Option<String>,
    #[serde(default = "default_google_timeout")]
    pub timeout_ms: u64,
    #[serde(default)]
    pub credentials: CredentialsConfig,
}

fn default_google_issuer() -> String {
    "https://accounts.google.com".into()
}
fn default_directory() -> String {
    "https://admin.googleapis.com".into()
}
fn default_google_timeout() -> u64 {
    10_000
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub server: Option<ServerConfig>,
    pub store: StoreConfig,
    #[serde(rename = "resource")]
    pub resources: Vec<ResourceConfig>,
    #[serde(default)]
    pub authorization: AuthorizationConfig,
    #[serde(default)]
    pub tokens: TokensConfig,
    #[serde(default)]
    pub clients: ClientsConfig,
    #[serde(default)]
    pub rate_limit: RateLimitConfig,
    pub google: GoogleConfig,
    /// The audit log shared with the gateway (its `[audit]` table, same keys).
    #[serde(default)]
    pub audit: Option<AuditConfig>,
}

/// A protected resource, with its URL parsed for comparison.
#[derive(Debug, Clone)]
pub struct Resource {
    pub url: String,
    pub name: String,
    pub parsed: Url,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub issuer: String,
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
}

/// The configuration file when none is named: `ops/config/sidecar.$CONFIG_ENV.toml`,
/// `CONFIG_ENV` defaulting to `development` (relative to the working directory).
pub fn default_path(config_env: Option<&str>) -> PathBuf {
    let env = config_env
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .unwrap_or("development");
    PathBuf::from(format!("ops/config/sidecar.{env}.toml"))
}

/// The names of the secrets a configuration text refers to (`${secret:NAME…}` in its
/// string values; comments are not looked at).
pub fn secret_names(text: &str) -> Result<BTreeSet<String>, ConfigError> {
    fn walk(v: &toml::Value, out: &mut BTreeSet<String>) {
        match v {
            toml::Value::String(s) => out.extend(config_refs::referenced_names(s)),
            toml::Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
            toml::Value::Table(t) => t.values().for_each(|i| walk(i, out)),
            _ => {}
        }
    }
    let value: toml::Value = toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
    let mut out = BTreeSet::new();
    walk(&value, &mut out);
    Ok(out)
}

impl Config {
    /// Reads a configuration file's text.
    pub fn read(path: &Path) -> Result<String, ConfigError> {
        std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })
    }

    /// Loads a file without a secret store (`${secret:…}` is an error).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::load_with(path, None)
    }

    /// Loads a file; `${secret:…}` references are resolved by `secrets`, which must
    /// already hold every name [`secret_names`] finds.
    pub fn load_with(path: &Path, secrets: Option<&SecretStore>) -> Result<Config, ConfigError> {
        let text = Config::read(path)?;
        let secret = |reference: &str| -> Result<String, String> {
            match secrets {
                Some(s) => s.resolve(reference).map_err(|e| e.to_string()),
                None => Err(NO_SECRET_STORE.into()),
            }
        };
        Config::parse_with(&text, &|n| std::env::var(n).ok(), &secret)
            .map_err(|e| ConfigError::Parse(format!("{}: {e}", path.display())))
    }

    /// Parses config text; `${secret:…}` references are an error.
    pub fn parse(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        Config::parse_with(text, env, &|_| Err(NO_SECRET_STORE.into()))
    }

    /// Parses config text, `secret` resolving `NAME` or `NAME#json_key`. An error never
    /// contains a value that came from a secret or a file.
    pub fn parse_with(
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
        secret: &dyn Fn(&str) -> Result<String, String>,
    ) -> Result<Config, ConfigError> {
        // Values read from files and secrets: scrubbed from any error below.
        let mut hidden = Vec::new();
        let result = (|| {
            let mut value: toml::Value =
                toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
            let sources = Sources { env, secret };
            expand_tree(&mut value, "", &sources, &mut hidden)?;
            let raw: RawConfig = value
                .try_into()
                .map_err(|e: toml::de::Error| ConfigError::Parse(e.to_string()))?;
            Config::validate(raw)
        })();
        result.map_err(|e| e.scrubbed(&hidden))
    }

    fn validate(raw: RawConfig) -> Result<Config, ConfigError> {
        validate_limits(&raw)?;
        let server = raw.server.unwrap_or(ServerConfig {
            listen: default_listen(),
            issuer: None,
            mode: Mode::default(),
            client_ip_header: None,
            max_body_bytes: default_max_body(),
            log_format: LogFormat::default(),
            body_timeout_s: default_body_timeout(),
            header_timeout_s: default_header_timeout(),
            max_connections: default_max_connections(),
        });
        validate_server_limits(&server)?;
        let issuer = server
            .issuer
            .clone()
            .unwrap_or_else(|| format!("http://{}", server.listen));
        let issuer = issuer.trim_end_matches('/').to_string();
        let parsed = Url::parse(&issuer).map_err(|e| invalid("server.issuer", e.to_string()))?;
        if !matches!(parsed.scheme(), "http" | "https")
            || parsed.query().is_some()
            || parsed.fragment().is_some()
        {
            return Err(invalid(
                "server.issuer",
                "must be an http(s) URL without query or fragment",
            ));
        }
        if parsed.scheme() == "http" && !is_loopback_host(parsed.host_str().unwrap_or("")) {
            return Err(invalid(
                "server.issuer",
                "must be https unless it is a loopback address",
            ));
        }
        if !valid_schema_name(&raw.store.schema) {
            return Err(invalid(
                "store.schema",
                "must be 1-63 of a-z, 0-9, _ starting with a letter or _",
            ));
        }
        if raw.store.pool_size == 0 {
            return Err(invalid("store.pool_size", "must be at least 1"));
        }
        if raw.resources.is_empty() {
            return Err(invalid(
                "resource",
                "at least one [[resource]] (the gateway's /mcp URL) is required",
            ));
        }
        let mut resources = Vec::new();
        for (i, r) in raw.resources.iter().enumerate() {
            let key = format!("resource[{i}].url");
            let parsed = Url::parse(&r.url).map_err(|e| invalid(&key, e.to_string()))?;
            if parsed.fragment().is_some() || !matches!(parsed.scheme(), "http" | "https") {
                return Err(invalid(&key, "must be an http(s) URL without fragment"));
            }
            resources.push(Resource {
                url: r.url.clone(),
                name: r.name.clone().unwrap_or_else(|| r.url.clone()),
                parsed,
            });
        }
        let auth = raw.authorization;
        if !auth.scopes_supported.contains(&auth.default_scope) {
            return Err(invalid(
                "authorization.default_scope",
                "must be one of scopes_supported",
            ));
        }
        if raw.tokens.access_token_ttl_s < 30 || raw.tokens.access_token_ttl_s > 86_400 {
            return Err(invalid("tokens.access_token_ttl_s", "must be 30 … 86400"));
        }
        if raw.tokens.code_ttl_s == 0 || raw.tokens.code_ttl_s > 600 {
            return Err(invalid("tokens.code_ttl_s", "must be 1 … 600"));
        }
        for (i, u) in raw.clients.allowed_redirect_uris.iter().enumerate() {
            let parsed = Url::parse(u).map_err(|e| {
                invalid(
                    &format!("clients.allowed_redirect_uris[{i}]"),
                    e.to_string(),
                )
            })?;
            if parsed.fragment().is_some() {
                return Err(invalid(
                    &format!("clients.allowed_redirect_uris[{i}]"),
                    "must not have a fragment",
                ));
            }
        }
        let mut google = raw.google;
        if google.client_id.trim().is_empty() {
            return Err(invalid("google.client_id", "is required"));
        }
        google.allowed_domains = google
            .allowed_domains
            .iter()
            .map(|d| d.trim().to_ascii_lowercase())
            .filter(|d| !d.is_empty())
            .collect();
        if google.allowed_domains.is_empty() {
            return Err(invalid(
                "google.allowed_domains",
                "at least one Workspace domain is required",
            ));
        }
        google.allowed_groups = google
            .allowed_groups
            .iter()
            .map(|g| g.trim().to_ascii_lowercase())
            .collect();
        google.issuer = google.issuer.trim_end_matches('/').to_string();
        Url::parse(&google.issuer).map_err(|e| invalid("google.issuer", e.to_string()))?;
        match google.credentials.source {
            CredentialSource::None => {}
            CredentialSource::ServiceAccountKey => {
                if google.credentials.key_file.is_none() && google.credentials.key_json.is_none() {
                    return Err(invalid(
                        "google.credentials.key_file",
                        "service_account_key needs key_file or key_json",
                    ));
                }
                if google.admin_subject.is_none() {
                    return Err(invalid(
                        "google.admin_subject",
                        "domain-wide delegation needs the admin user to act as",
                    ));
                }
            }
            CredentialSource::WorkloadIdentity => {
                if google.credentials.service_account.is_none() {
                    return Err(invalid(
                        "google.credentials.service_account",
                        "workload_identity needs the service account to impersonate",
                    ));
                }
                if google.credentials.audience.is_none() {
                    return Err(invalid(
                        "google.credentials.audience",
                        "workload_identity needs the workload identity provider audience",
                    ));
                }
            }
        }
        if let Some(audit) = &raw.audit {
            audit.validate().map_err(|e| match e {
                mcp_audit::AuditError::Config { key, message } => ConfigError::Invalid {
                    key: key.trim_matches('`').to_string(),
                    message,
                },
                other => invalid("audit", other.to_string()),
            })?;
        }
        Ok(Config {
            server,
            issuer,
            store: raw.store,
            resources,
            authorization: auth,
            tokens: raw.tokens,
            clients: raw.clients,
            rate_limit: raw.rate_limit,
            google,
            audit: raw.audit,
        })
    }

    /// The configured resource a requested `resource` names: scheme and host compared
    /// case-insensitively, default ports elided, a trailing `/` ignored.
    pub fn find_resource(&self, requested: &str) -> Option<&Resource> {
        let req = Url::parse(requested).ok()?;
        if req.fragment().is_some() {
            return None;
        }
        self.resources
            .iter()
            .find(|r| same_resource(&r.parsed, &req))
    }
}

fn same_resource(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str().map(str::to_ascii_lowercase) == b.host_str().map(str::to_ascii_lowercase)
        && a.port_or_known_default() == b.port_or_known_default()
        && a.path().trim_end_matches('/') == b.path().trim_end_matches('/')
        && a.query() == b.query()
}

pub fn is_loopback_host(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost")
        || h.parse::<std::net::IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

fn valid_schema_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

impl ConfigError {
    /// The same error with every value of `hidden` replaced by `***`.
    fn scrubbed(self, hidden: &[String]) -> ConfigError {
        let scrub = |m: String| {
            let mut m = m;
            for h in hidden {
                // Short values (a port, `true`) would only mangle the message; they are
                // not secrets worth the name.
                if h.len() >= 4 && m.contains(h.as_str()) {
                    m = m.replace(h.as_str(), "***");
                }
                // A multi-line value (a PEM key) may be quoted line by line.
                for line in h.lines().map(str::trim).filter(|l| l.len() >= 8) {
                    if m.contains(line) {
                        m = m.replace(line, "***");
                    }
                }
            }
            m
        };
        match self {
            ConfigError::Read { .. } => self,
            ConfigError::Parse(m) => ConfigError::Parse(scrub(m)),
            ConfigError::Invalid { key, message } => ConfigError::Invalid {
                key,
                message: scrub(message),
            },
        }
    }
}

/// Expands the references of every string in `v`; `key` names the value in errors and
/// `hidden` collects the values read from files and secrets.
fn expand_tree(
    v: &mut toml::Value,
    key: &str,
    sources: &Sources,
    hidden: &mut Vec<String>,
) -> Result<(), ConfigError> {
    match v {
        toml::Value::String(s) => {
            *s = config_refs::expand_noting(s, sources, hidden)
                .map_err(|e| invalid(key, e.to_string()))?;
        }
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                expand_tree(item, &format!("{key}[{i}]"), sources, hidden)?;
            }
        }
        toml::Value::Table(t) => {
            for (k, item) in t.iter_mut() {
                let child = if key.is_empty() {
                    k.clone()
                } else {
                    format!("{key}.{k}")
                };
                expand_tree(item, &child, sources, hidden)?;
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[store]
url = "postgres://postgres@127.0.0.1:5432/test"
[[resource]]
url = "http://127.0.0.1:8080/mcp"
[google]
client_id = "cid"
client_secret = "${env:SECRET}"
allowed_domains = ["Example.com"]
"#;

    fn env(n: &str) -> Option<String> {
        (n == "SECRET").then(|| "s3cret".to_string())
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = Config::parse(MINIMAL, &env).unwrap();
        assert_eq!(c.issuer, "http://127.0.0.1:8090");
        assert_eq!(c.server.mode, Mode::Issuer);
        assert_eq!(c.google.client_secret.as_deref(), Some("s3cret"));
        assert_eq!(c.google.allowed_domains, vec!["example.com"]);
        assert_eq!(c.tokens.access_token_ttl_s, 600);
        assert_eq!(c.tokens.code_ttl_s, 60);
        assert_eq!(c.store.schema, "mcp_oauth");
    }

    #[test]
    fn unset_env_names_the_key() {
        let err = Config::parse(MINIMAL, &|_| None).unwrap_err().to_string();
        assert!(err.contains("google.client_secret"), "{err}");
        assert!(err.contains("SECRET"), "{err}");
    }

    #[test]
    fn unknown_keys_are_errors() {
        let text = format!("{MINIMAL}\nbogus = 1\n");
        assert!(Config::parse(&text, &env).is_err());
    }

    #[test]
    fn resources_compare_canonically() {
        let c = Config::parse(MINIMAL, &env).unwrap();
        assert!(c.find_resource("http://127.0.0.1:8080/mcp").is_some());
        assert!(c.find_resource("HTTP://127.0.0.1:8080/mcp/").is_some());
        assert!(c.find_resource("http://127.0.0.1:8080/other").is_none());
        assert!(c.find_resource("http://127.0.0.1:8080/mcp#x").is_none());
        assert!(c.find_resource("not a url").is_none());
    }

    #[test]
    fn non_loopback_http_issuer_is_refused() {
        let text = format!("[server]\nissuer = \"http://auth.example.com\"\n{MINIMAL}");
        let err = Config::parse(&text, &env).unwrap_err().to_string();
        assert!(err.contains("server.issuer"), "{err}");
    }

    #[test]
    fn env_defaults_apply_when_unset_or_empty() {
        let text = format!("[server]\nlisten = \"${{env:LISTEN:-127.0.0.1:0}}\"\n{MINIMAL}");
        let c = Config::parse(&text, &env).unwrap();
        assert_eq!(c.server.listen, "127.0.0.1:0");
        let c = Config::parse(&text, &|n| match n {
            "LISTEN" => Some(String::new()),
            _ => env(n),
        })
        .unwrap();
        assert_eq!(c.server.listen, "127.0.0.1:0");
        let c = Config::parse(&text, &|n| match n {
            "LISTEN" => Some("127.0.0.1:9999".into()),
            _ => env(n),
        })
        .unwrap();
        assert_eq!(c.server.listen, "127.0.0.1:9999");
    }

    fn secrets(reference: &str) -> Result<String, String> {
        match reference {
            "db#url" => Ok("postgres://app:hunter2-pw@db.internal:5432/mcp".into()),
            "google#client_secret" => Ok("GOCSPX-very-secret".into()),
            "pool" => Ok("not-a-number-s3cret".into()),
            other => Err(format!("secret {other:?} was not loaded")),
        }
    }

    #[test]
    fn secret_references_resolve_and_audit_table_parses() {
        let text = r#"
[store]
url = "${secret:db#url}"
[[resource]]
url = "http://127.0.0.1:8080/mcp"
[google]
client_id = "cid"
client_secret = "${secret:google#client_secret}"
allowed_domains = ["example.com"]
[audit]
postgres_url = "${secret:db#url}"
spool_dir = "${env:SPOOL:-/tmp/spool}"
flush_interval_ms = 50
"#;
        let c = Config::parse_with(text, &|_| None, &secrets).unwrap();
        assert_eq!(
            c.store.url,
            "postgres://app:hunter2-pw@db.internal:5432/mcp"
        );
        assert_eq!(
            c.google.client_secret.as_deref(),
            Some("GOCSPX-very-secret")
        );
        let audit = c.audit.expect("[audit]");
        assert_eq!(audit.postgres_url.as_deref(), Some(c.store.url.as_str()));
        assert_eq!(audit.spool_dir, std::path::PathBuf::from("/tmp/spool"));
        assert_eq!(audit.flush_interval_ms, 50);
        assert_eq!(audit.schema, "public");
        assert!(!format!("{audit:?}").contains("hunter2"));
        assert!(Config::parse(MINIMAL, &env).unwrap().audit.is_none());
        let names = secret_names(&format!("# ${{secret:in-a-comment}}\n{text}")).unwrap();
        assert_eq!(
            names.into_iter().collect::<Vec<_>>(),
            vec!["db".to_string(), "google".to_string()]
        );
    }

    #[test]
    fn errors_name_the_key_and_never_show_a_secret() {
        // A missing secret: the key and the reference, nothing else.
        let text = MINIMAL.replace("${env:SECRET}", "${secret:nope#key}");
        let err = Config::parse_with(&text, &env, &secrets)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("google.client_secret") && err.contains("nope"),
            "{err}"
        );
        // Without a store.
        let err = Config::parse(&text, &env).unwrap_err().to_string();
        assert!(err.contains("no secret store"), "{err}");
        // A secret value in the wrong place: the type error would quote it.
        let text = MINIMAL.replace(
            "[[resource]]",
            "pool_size = \"${secret:pool}\"\n[[resource]]",
        );
        let err = Config::parse_with(&text, &env, &secrets)
            .unwrap_err()
            .to_string();
        assert!(!err.contains("not-a-number-s3cret"), "{err}");
        assert!(err.contains("***"), "{err}");
        // A bad audit value names its key.
        let text = format!("{MINIMAL}\n[audit]\nbatch_size = 0\n");
        let err = Config::parse(&text, &env).unwrap_err().to_string();
        assert!(err.contains("audit.batch_size"), "{err}");
        let text = format!("{MINIMAL}\n[audit]\nbogus = 1\n");
        assert!(Config::parse(&text, &env).is_err());
    }

    #[test]
    fn default_path_follows_config_env() {
        assert_eq!(
            default_path(None),
            PathBuf::from("ops/config/sidecar.development.toml")
        );
        assert_eq!(
            default_path(Some("production")),
            PathBuf::from("ops/config/sidecar.production.toml")
        );
        assert_eq!(
            default_path(Some("")),
            PathBuf::from("ops/config/sidecar.development.toml")
        );
    }

    #[test]
    fn abuse_limits_have_defaults_and_are_validated() {
        let c = Config::parse(MINIMAL, &env).unwrap();
        assert_eq!(c.rate_limit.lookups_burst, 20);
        assert_eq!(c.server.body_timeout_s, 10);
        assert_eq!(c.server.max_connections, 4096);
        assert_eq!(c.clients.unused_registration_ttl_s, 86_400);
        assert_eq!(c.store.cleanup_interval_s, 300);
        for (table, key, bad) in [
            (
                "[rate_limit]",
                "rate_limit.lookups_per_second",
                "lookups_per_second = 0.0",
            ),
            (
                "[rate_limit]",
                "rate_limit.lookups_burst",
                "lookups_burst = 0",
            ),
        ] {
            let text = format!("{MINIMAL}\n{table}\n{bad}\n");
            let err = Config::parse(&text, &env).unwrap_err().to_string();
            assert!(err.contains(key), "{err}");
        }
        for (key, bad) in [
            ("server.body_timeout_s", "body_timeout_s = 0"),
            ("server.max_connections", "max_connections = 0"),
            ("server.header_timeout_s", "header_timeout_s = 301"),
        ] {
            let text = format!("[server]\n{bad}\n{MINIMAL}");
            let err = Config::parse(&text, &env).unwrap_err().to_string();
            assert!(err.contains(key), "{err}");
        }
        let text = MINIMAL.replace("[[resource]]", "cleanup_interval_s = 0\n[[resource]]");
        let err = Config::parse(&text, &env).unwrap_err().to_string();
        assert!(err.contains("store.cleanup_interval_s"), "{err}");
    }

    #[test]
    fn schema_names_are_checked() {
        assert!(valid_schema_name("mcp_oauth_t1"));
        assert!(!valid_schema_name("Bad"));
        assert!(!valid_schema_name("x;drop"));
        assert!(!valid_schema_name(""));
    }
}
