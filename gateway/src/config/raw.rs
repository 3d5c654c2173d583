//! The file as written: serde structs with `deny_unknown_fields` and spans on the values a
//! person can get wrong. Nothing here is validated; [`super::validate`] turns these into
//! the typed config.

use serde::Deserialize;
use std::collections::BTreeMap;

pub(super) const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub(super) const DEFAULT_MAX_BODY: usize = 4 * 1024 * 1024;
/// A 4 MiB body at a slow 200 KiB/s still makes it.
pub(super) const DEFAULT_BODY_TIMEOUT_S: u64 = 30;
/// Well below a container's usual 65,536 open files, well above what a replica serves.
pub(super) const DEFAULT_MAX_CONNECTIONS: usize = 16_384;
pub(super) const DEFAULT_KEEPALIVE_TIMEOUT_S: u64 = 75;
pub(super) const DEFAULT_DRAIN_S: u64 = 10;
pub(super) const DEFAULT_TIMEOUT_MS: u64 = 30_000;
pub(super) const DEFAULT_STREAM_IDLE_MS: u64 = 300_000;
pub(super) const DEFAULT_SESSION_TTL_S: u64 = 24 * 3600;
pub(super) const DEFAULT_HEALTH_INTERVAL_S: u64 = 10;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct FileConfig {
    #[serde(default)]
    pub(super) server: FileServer,
    #[serde(default)]
    pub(super) auth: FileAuth,
    #[serde(default)]
    pub(super) metrics: FileMetrics,
    /// Read key by key in validation (so that each error names its key's line).
    pub(super) audit: Option<toml::Spanned<crate::audit::SpannedTable>>,
    #[serde(default)]
    pub(super) tracing: FileTracing,
    #[serde(default)]
    pub(super) backend: Vec<toml::Spanned<FileBackend>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct FileServer {
    pub(super) listen: Option<toml::Spanned<String>>,
    pub(super) public_url: Option<toml::Spanned<String>>,
    pub(super) max_body_bytes: Option<usize>,
    pub(super) body_timeout_s: Option<u64>,
    pub(super) max_connections: Option<usize>,
    pub(super) keepalive_timeout_s: Option<u64>,
    pub(super) drain_s: Option<u64>,
    pub(super) stop_delay_s: Option<u64>,
    pub(super) request_timeout_ms: Option<u64>,
    pub(super) stream_idle_timeout_ms: Option<u64>,
    pub(super) session_key: Option<toml::Spanned<String>>,
    pub(super) session_ttl_s: Option<u64>,
    pub(super) allowed_hosts: Option<Vec<String>>,
    pub(super) allowed_origins: Option<Vec<String>>,
    pub(super) health_interval_s: Option<u64>,
    pub(super) log_format: Option<toml::Spanned<String>>,
    pub(super) secrets_refresh_s: Option<u64>,
    pub(super) client_ip_header: Option<String>,
    pub(super) held_calls_max: Option<usize>,
    pub(super) held_call_ttl_s: Option<u64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct FileMetrics {
    pub(super) listen: Option<toml::Spanned<String>>,
}

/// `[tracing]`: OpenTelemetry export.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct FileTracing {
    pub(super) enabled: Option<bool>,
    pub(super) endpoint: Option<toml::Spanned<String>>,
    pub(super) headers: Option<std::collections::BTreeMap<String, toml::Spanned<String>>>,
    pub(super) sample_ratio: Option<toml::Spanned<f64>>,
    pub(super) service_name: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct FileAuth {
    pub(super) mode: Option<toml::Spanned<String>>,
    pub(super) issuer: Option<toml::Spanned<String>>,
    pub(super) audience: Option<toml::Spanned<String>>,
    pub(super) algorithms: Option<Vec<toml::Spanned<String>>>,
    pub(super) cache_ttl_s: Option<u64>,
    pub(super) cache_max_entries: Option<u64>,
    pub(super) clock_skew_s: Option<u64>,
    pub(super) required_scopes: Option<Vec<String>>,
    pub(super) scopes_supported: Option<Vec<String>>,
    pub(super) jwks_refresh_min_s: Option<u64>,
    pub(super) jwks_url: Option<toml::Spanned<String>>,
    pub(super) tokeninfo_url: Option<toml::Spanned<String>>,
    pub(super) userinfo_url: Option<toml::Spanned<String>>,
    pub(super) google_client_id: Option<toml::Spanned<String>>,
    pub(super) allowed_domains: Option<Vec<String>>,
    pub(super) resource_name: Option<String>,
}

#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub(super) struct FilePolicy {
    #[serde(default)]
    pub(super) allow_domains: Vec<String>,
    #[serde(default)]
    pub(super) allow_groups: Vec<String>,
    #[serde(default)]
    pub(super) allow_users: Vec<String>,
    #[serde(default)]
    pub(super) deny_users: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileBackend {
    pub(super) name: toml::Spanned<String>,
    pub(super) transport: Option<toml::Spanned<String>>,
    pub(super) url: Option<toml::Spanned<String>>,
    #[serde(default)]
    pub(super) headers: BTreeMap<String, toml::Spanned<String>>,
    pub(super) prefix: Option<bool>,
    pub(super) protocol: Option<toml::Spanned<String>>,
    pub(super) timeout_ms: Option<u64>,
    pub(super) enabled: Option<bool>,
    pub(super) command: Option<toml::Spanned<String>>,
    #[serde(default)]
    pub(super) args: Vec<toml::Spanned<String>>,
    #[serde(default)]
    pub(super) env: BTreeMap<String, toml::Spanned<String>>,
    pub(super) cwd: Option<toml::Spanned<String>>,
    pub(super) sharing: Option<toml::Spanned<String>>,
    pub(super) processes: Option<usize>,
    pub(super) idle_timeout_s: Option<u64>,
    pub(super) max_processes: Option<usize>,
    #[serde(default)]
    pub(super) allow_domains: Vec<String>,
    #[serde(default)]
    pub(super) allow_groups: Vec<String>,
    #[serde(default)]
    pub(super) allow_users: Vec<String>,
    #[serde(default)]
    pub(super) deny_users: Vec<String>,
    #[serde(default)]
    pub(super) tools: BTreeMap<String, FilePolicy>,
    #[serde(default)]
    pub(super) forward_identity: BTreeMap<String, String>,
}
