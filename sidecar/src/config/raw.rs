//! The file as written: serde structs with `deny_unknown_fields` and a span on every
//! value a person can get wrong, so that an error can name its line. Strings are kept
//! unexpanded (`${env:…}` and friends are resolved in [`super::validate`]), and so are
//! numbers written as strings ([`Number::Text`]). Nothing here is validated and no
//! default is applied: the `DEFAULT_*` constants are applied by validation.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use toml::Spanned;

pub(super) const DEFAULT_LISTEN: &str = "127.0.0.1:8090";
pub(super) const DEFAULT_MAX_BODY: usize = 64 * 1024;
pub(super) const DEFAULT_BODY_TIMEOUT_S: u64 = 10;
pub(super) const DEFAULT_HEADER_TIMEOUT_S: u64 = 20;
pub(super) const DEFAULT_KEEPALIVE_TIMEOUT_S: u64 = 75;
pub(super) const DEFAULT_MAX_CONNECTIONS: usize = 4096;
pub(super) const DEFAULT_STOP_DELAY_S: u64 = 0;
pub(super) const DEFAULT_DRAIN_S: u64 = 10;
pub(super) const DEFAULT_SCHEMA: &str = "mcp_oauth";
pub(super) const DEFAULT_POOL: usize = 16;
pub(super) const DEFAULT_CLEANUP_INTERVAL_S: u64 = 300;
pub(super) const DEFAULT_SCOPES: [&str; 2] = ["mcp", "offline_access"];
pub(super) const DEFAULT_SCOPE: &str = "mcp";
pub(super) const DEFAULT_CONSENT_DAYS: u32 = 90;
pub(super) const DEFAULT_PENDING_TTL_S: u64 = 600;
pub(super) const DEFAULT_ACCESS_TTL_S: u64 = 600;
pub(super) const DEFAULT_REFRESH_TTL_S: u64 = 30 * 24 * 3600;
pub(super) const DEFAULT_CODE_TTL_S: u64 = 60;
pub(super) const DEFAULT_REGISTRATION_PER_MINUTE: u32 = 20;
pub(super) const DEFAULT_CIMD_BYTES: usize = 16 * 1024;
pub(super) const DEFAULT_CIMD_TIMEOUT_MS: u64 = 3000;
pub(super) const DEFAULT_CIMD_CACHE_S: u64 = 3600;
pub(super) const DEFAULT_CIMD_MAX_CACHE_S: u64 = 86_400;
pub(super) const DEFAULT_UNUSED_REGISTRATION_TTL_S: u64 = 86_400;
pub(super) const DEFAULT_LOOKUPS_BURST: u32 = 20;
pub(super) const DEFAULT_LOOKUPS_PER_SECOND: f64 = 1.0;
pub(super) const DEFAULT_GOOGLE_ISSUER: &str = "https://accounts.google.com";
pub(super) const DEFAULT_DIRECTORY: &str = "https://admin.googleapis.com";
pub(super) const DEFAULT_GOOGLE_TIMEOUT_MS: u64 = 10_000;
pub(super) const DEFAULT_STS: &str = "https://sts.googleapis.com/v1/token";
pub(super) const DEFAULT_IAM: &str = "https://iamcredentials.googleapis.com";

/// A string value as written, with its place in the file.
pub(super) type Text = Spanned<String>;
/// A number as written, with its place in the file.
pub(super) type Num = Option<Spanned<Number>>;

/// A number as written: a TOML integer or float, or a string (whose references, once
/// expanded, must give a number).
#[derive(Debug, Clone)]
pub(super) enum Number {
    Int(i64),
    Float(f64),
    Text(String),
}

impl<'de> Deserialize<'de> for Number {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Number, D::Error> {
        struct NumberVisitor;
        impl Visitor<'_> for NumberVisitor {
            type Value = Number;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Number, E> {
                Ok(Number::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Number, E> {
                i64::try_from(v)
                    .map(Number::Int)
                    .map_err(|_| E::custom("number too large"))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Number, E> {
                Ok(Number::Float(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Number, E> {
                Ok(Number::Text(v.to_owned()))
            }
        }
        d.deserialize_any(NumberVisitor)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub(super) server: RawServer,
    pub(super) store: Spanned<RawStore>,
    pub(super) resource: Vec<Spanned<RawResource>>,
    #[serde(default)]
    pub(super) authorization: RawAuthorization,
    #[serde(default)]
    pub(super) tokens: RawTokens,
    #[serde(default)]
    pub(super) clients: RawClients,
    #[serde(default)]
    pub(super) rate_limit: RawRateLimit,
    pub(super) google: Spanned<RawGoogle>,
    /// The gateway's `[audit]` table: each key's value kept as a TOML tree with its
    /// span, whose strings are expanded before the audit crate reads and checks it.
    pub(super) audit: Option<Spanned<mcp_audit::SpannedTable>>,
    #[serde(default)]
    pub(super) metrics: super::observe::RawMetrics,
    #[serde(default)]
    pub(super) tracing: super::observe::RawTracing,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    pub(super) listen: Option<Text>,
    pub(super) issuer: Option<Text>,
    pub(super) mode: Option<Text>,
    pub(super) client_ip_header: Option<Text>,
    pub(super) max_body_bytes: Num,
    pub(super) log_format: Option<Text>,
    pub(super) body_timeout_s: Num,
    pub(super) header_timeout_s: Num,
    pub(super) keepalive_timeout_s: Num,
    pub(super) max_connections: Num,
    pub(super) stop_delay_s: Num,
    pub(super) drain_s: Num,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStore {
    pub(super) url: Text,
    pub(super) schema: Option<Text>,
    pub(super) pool_size: Num,
    pub(super) cleanup_interval_s: Num,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawResource {
    pub(super) url: Text,
    pub(super) name: Option<Text>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAuthorization {
    pub(super) require_resource: Option<bool>,
    pub(super) scopes_supported: Option<Vec<Text>>,
    pub(super) default_scope: Option<Text>,
    pub(super) consent_ttl_days: Num,
    pub(super) pending_ttl_s: Num,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTokens {
    pub(super) access_token_ttl_s: Num,
    pub(super) refresh_token_ttl_s: Num,
    pub(super) code_ttl_s: Num,
    pub(super) signing_key: Option<Text>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawClients {
    #[serde(default)]
    pub(super) allowed_redirect_uris: Vec<Text>,
    pub(super) registration_per_minute: Num,
    pub(super) allow_private_cimd: Option<bool>,
    pub(super) allow_http_cimd: Option<bool>,
    pub(super) cimd_max_bytes: Num,
    pub(super) cimd_timeout_ms: Num,
    pub(super) cimd_cache_s: Num,
    pub(super) cimd_max_cache_s: Num,
    pub(super) unused_registration_ttl_s: Num,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRateLimit {
    pub(super) lookups_burst: Num,
    pub(super) lookups_per_second: Num,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGoogle {
    pub(super) issuer: Option<Text>,
    pub(super) client_id: Text,
    pub(super) client_secret: Option<Text>,
    pub(super) allowed_domains: Spanned<Vec<Text>>,
    #[serde(default)]
    pub(super) allowed_groups: Vec<Text>,
    pub(super) hd_hint: Option<Text>,
    pub(super) authorization_endpoint: Option<Text>,
    pub(super) token_endpoint: Option<Text>,
    pub(super) jwks_uri: Option<Text>,
    pub(super) directory_api_base: Option<Text>,
    pub(super) admin_subject: Option<Text>,
    pub(super) timeout_ms: Num,
    pub(super) credentials: Option<Spanned<RawCredentials>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCredentials {
    pub(super) source: Option<Text>,
    pub(super) key_file: Option<Text>,
    pub(super) key_json: Option<Text>,
    pub(super) token_uri: Option<Text>,
    pub(super) service_account: Option<Text>,
    pub(super) audience: Option<Text>,
    pub(super) sts_endpoint: Option<Text>,
    pub(super) iam_endpoint: Option<Text>,
    pub(super) aws_region: Option<Text>,
}
