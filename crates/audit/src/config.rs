//! The `[audit]` table of the gateway configuration.
//!
//! Every key has a default, so an absent table means "audit to the JSON Lines file
//! `mcp-gateway-audit.jsonl`". [`AuditConfig::validate`] names the key at fault.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::AuditError;

/// When the local spool (and the JSON Lines file sink) is flushed to stable storage.
///
/// Whatever the policy, an event is handed to the kernel (`write(2)`) before it counts
/// as spooled, so a crash of the gateway process (even `kill -9`) loses nothing that
/// was spooled; the policy only decides what survives a crash of the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FsyncPolicy {
    /// `fdatasync` after every append, before the append returns.
    Always,
    /// `fdatasync` at most every `fsync_interval_ms`, in the background.
    Interval,
    /// Leave it to the kernel's write-back.
    Never,
}

/// Default keys whose values are replaced by `"[REDACTED]"` in logged arguments.
pub const DEFAULT_REDACT_KEYS: &[&str] = &[
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "apikey",
    "api_key",
    "authorization",
    "cookie",
    "credential",
    "credentials",
    "private_key",
    "privatekey",
    "access_key",
    "session_key",
    "ssn",
    "card_number",
    "cvv",
];

/// `[audit]` settings. Unknown keys are an error; every key has a default.
#[derive(Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// `false` turns auditing off entirely (benchmarks; not recommended).
    pub enabled: bool,
    /// `postgres://user:pass@host:port/db[?sslmode=require]`. Unset: JSON Lines file.
    pub postgres_url: Option<String>,
    /// Schema holding the audit tables (created if missing).
    pub schema: String,
    /// JSON Lines sink used when no `postgres_url` is set.
    pub file: PathBuf,
    /// Directory of the local spool (Postgres down, slow, or queue full).
    pub spool_dir: PathBuf,
    /// Events held in memory waiting for the writer; beyond this, `record` spools to disk.
    pub queue_capacity: usize,
    /// Most events written in one COPY (or INSERT, when replaying).
    pub batch_size: usize,
    /// Longest an event waits in memory for its batch to fill.
    pub flush_interval_ms: u64,
    /// Also store the (redacted) arguments of each call, not only their digest.
    pub log_arguments: bool,
    /// Argument keys whose values are redacted (see `Auditor::redact`).
    pub redact_keys: Vec<String>,
    /// Logged arguments larger than this (serialized) are replaced by a marker.
    pub max_args_bytes: usize,
    /// Drop monthly partitions whose every row is older than this; 0 keeps everything.
    pub retention_days: u32,
    /// Months of partitions created ahead of the current one.
    pub partitions_ahead: u32,
    /// Flush policy of the spool and of the file sink.
    pub fsync: FsyncPolicy,
    /// Period of the background flush for `fsync = "interval"`.
    pub fsync_interval_ms: u64,
    /// Append every event to the spool inside `record` (before it returns) and write
    /// Postgres from the spool: no event is ever only in memory, at the cost of one
    /// `write(2)` per event on the request path.
    pub write_ahead: bool,
    /// PostgreSQL connections of the writer's pool.
    pub pool_size: usize,
    /// Connecting to PostgreSQL gives up after this.
    pub connect_timeout_ms: u64,
    /// A batch write slower than this counts as a failure (the batch is spooled).
    pub write_timeout_ms: u64,
    /// Longest `shutdown` waits for Postgres before leaving the rest in the spool.
    pub shutdown_timeout_ms: u64,
    /// Extra PEM CA certificates trusted for TLS to PostgreSQL (e.g. the RDS bundle).
    pub tls_ca_file: Option<PathBuf>,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            enabled: true,
            postgres_url: None,
            schema: "public".into(),
            file: PathBuf::from("mcp-gateway-audit.jsonl"),
            spool_dir: PathBuf::from("mcp-gateway-audit-spool"),
            queue_capacity: 40_000,
            batch_size: 20_000,
            flush_interval_ms: 1_000,
            log_arguments: false,
            redact_keys: DEFAULT_REDACT_KEYS.iter().map(|s| s.to_string()).collect(),
            max_args_bytes: 64 * 1024,
            retention_days: 0,
            partitions_ahead: 2,
            fsync: FsyncPolicy::Interval,
            fsync_interval_ms: 1_000,
            write_ahead: false,
            pool_size: 2,
            connect_timeout_ms: 5_000,
            write_timeout_ms: 5_000,
            shutdown_timeout_ms: 5_000,
            tls_ca_file: None,
        }
    }
}

/// Never prints the database password.
impl fmt::Debug for AuditConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditConfig")
            .field("enabled", &self.enabled)
            .field(
                "postgres_url",
                &self.postgres_url.as_deref().map(redact_url),
            )
            .field("schema", &self.schema)
            .field("file", &self.file)
            .field("spool_dir", &self.spool_dir)
            .field("queue_capacity", &self.queue_capacity)
            .field("batch_size", &self.batch_size)
            .field("flush_interval_ms", &self.flush_interval_ms)
            .field("log_arguments", &self.log_arguments)
            .field("redact_keys", &self.redact_keys)
            .field("max_args_bytes", &self.max_args_bytes)
            .field("retention_days", &self.retention_days)
            .field("partitions_ahead", &self.partitions_ahead)
            .field("fsync", &self.fsync)
            .field("fsync_interval_ms", &self.fsync_interval_ms)
            .field("write_ahead", &self.write_ahead)
            .field("pool_size", &self.pool_size)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("write_timeout_ms", &self.write_timeout_ms)
            .field("shutdown_timeout_ms", &self.shutdown_timeout_ms)
            .field("tls_ca_file", &self.tls_ca_file)
            .finish()
    }
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db` (for logs).
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return "***".into();
    };
    let rest = &url[scheme_end + 3..];
    let auth_end = rest.find(['/', '?']).unwrap_or(rest.len());
    match rest[..auth_end].rfind('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            let masked = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                user.to_string()
            };
            format!("{}://{masked}{}", &url[..scheme_end], &rest[at..])
        }
        None => url.to_string(),
    }
}

/// The `[audit]` table as written: each key's value with its place in the file.
pub type SpannedTable = std::collections::BTreeMap<String, toml::Spanned<toml::Value>>;

/// A mistake in the `[audit]` table: the full key (`audit.batch_size`), the span of its
/// value when the key is written (a default can be at fault too: `None`), what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableProblem {
    pub key: String,
    pub span: Option<std::ops::Range<usize>>,
    pub message: String,
}

fn invalid(key: &str, message: impl Into<String>) -> AuditError {
    AuditError::Config {
        key: format!("audit.{key}"),
        message: message.into(),
    }
}

/// A valid unquoted PostgreSQL identifier we are happy to splice into SQL.
pub(crate) fn valid_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && s.len() <= 40
}

impl AuditConfig {
    /// Checks every key; the error names the first key at fault (`audit.batch_size`, …).
    pub fn validate(&self) -> Result<(), AuditError> {
        match self.problems().into_iter().next() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Every key at fault, each as an [`AuditError::Config`] naming it (empty: valid).
    pub fn problems(&self) -> Vec<AuditError> {
        let mut out = Vec::new();
        if let Some(url) = &self.postgres_url {
            if let Err(e) = self.pg_config_of(url) {
                out.push(e);
            }
        }
        if !valid_identifier(&self.schema) {
            out.push(invalid(
                "schema",
                format!(
                    "{:?} is not a plain identifier (lowercase letters, digits and _, at most 40)",
                    self.schema
                ),
            ));
        }
        if self.file.as_os_str().is_empty() {
            out.push(invalid("file", "must not be empty"));
        }
        if self.spool_dir.as_os_str().is_empty() {
            out.push(invalid("spool_dir", "must not be empty"));
        }
        let ranges: [(&str, u64, u64, u64); 9] = [
            ("queue_capacity", self.queue_capacity as u64, 1, 10_000_000),
            ("batch_size", self.batch_size as u64, 1, 50_000),
            ("flush_interval_ms", self.flush_interval_ms, 1, 60_000),
            ("max_args_bytes", self.max_args_bytes as u64, 64, 16 << 20),
            ("fsync_interval_ms", self.fsync_interval_ms, 1, 3_600_000),
            ("pool_size", self.pool_size as u64, 1, 64),
            ("connect_timeout_ms", self.connect_timeout_ms, 100, 600_000),
            ("write_timeout_ms", self.write_timeout_ms, 100, 600_000),
            ("shutdown_timeout_ms", self.shutdown_timeout_ms, 0, 600_000),
        ];
        for (key, value, min, max) in ranges {
            if value < min || value > max {
                out.push(invalid(
                    key,
                    format!("{value} is out of range ({min} to {max})"),
                ));
            }
        }
        if self.partitions_ahead > 120 {
            out.push(invalid("partitions_ahead", "at most 120 months"));
        }
        if self.retention_days > 365 * 100 {
            out.push(invalid(
                "retention_days",
                "at most 36500 (0 keeps everything)",
            ));
        }
        if self.redact_keys.iter().any(|k| normalize_key(k).is_empty()) {
            out.push(invalid(
                "redact_keys",
                "entries must contain a letter or digit",
            ));
        }
        if let Some(ca) = &self.tls_ca_file {
            if !ca.is_file() {
                out.push(invalid(
                    "tls_ca_file",
                    format!("{} is not a readable file", ca.display()),
                ));
            }
        }
        out
    }

    /// The `[audit]` table of a configuration file, each value with its span (its
    /// references already expanded by the caller), read and checked key by key: every
    /// mistake is returned, each with the span of its key's value, so that an error
    /// names the line of the key rather than the table's.
    pub fn from_table(table: &SpannedTable) -> Result<AuditConfig, Vec<TableProblem>> {
        let mut problems = Vec::new();
        let mut whole = toml::Table::new();
        for (key, value) in table {
            // One key at a time (every other key has its default), so that a wrong
            // type or an unknown key is told apart from the others; the keys that
            // pass are then checked together.
            let single = toml::Table::from_iter([(key.clone(), value.get_ref().clone())]);
            match single.try_into::<AuditConfig>() {
                Ok(_) => {
                    whole.insert(key.clone(), value.get_ref().clone());
                }
                Err(e) => problems.push(TableProblem {
                    key: format!("audit.{key}"),
                    span: Some(value.span()),
                    message: e.message().trim_end().to_string(),
                }),
            }
        }
        let cfg = match whole.try_into::<AuditConfig>() {
            Ok(cfg) => cfg,
            Err(e) => {
                problems.push(TableProblem {
                    key: "audit".into(),
                    span: None,
                    message: e.message().trim_end().to_string(),
                });
                return Err(problems);
            }
        };
        problems.extend(cfg.problems().into_iter().map(|e| {
            let (key, message) = match e {
                AuditError::Config { key, message } => (key, message),
                other => ("audit".to_string(), other.to_string()),
            };
            let short = key.strip_prefix("audit.").unwrap_or(&key);
            TableProblem {
                span: table.get(short).map(toml::Spanned::span),
                key,
                message,
            }
        }));
        if problems.is_empty() {
            Ok(cfg)
        } else {
            Err(problems)
        }
    }

    /// Parses `postgres_url` into a driver config (the error never echoes the URL).
    pub(crate) fn pg_config_of(&self, url: &str) -> Result<tokio_postgres::Config, AuditError> {
        let cfg = tokio_postgres::Config::from_str(url).map_err(|e| {
            invalid(
                "postgres_url",
                format!("not a PostgreSQL URL like postgres://user:password@host:5432/db ({e})"),
            )
        })?;
        if cfg.get_hosts().is_empty() {
            return Err(invalid("postgres_url", "names no host"));
        }
        Ok(cfg)
    }
}

/// Lowercase, without `-`, `_`, spaces or dots: how keys are compared for redaction.
pub(crate) fn normalize_key(k: &str) -> String {
    k.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(|c| c.to_lowercase())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_password_in_url() {
        assert_eq!(
            redact_url("postgres://app:s3cr@t@db:5432/audit?sslmode=require"),
            "postgres://app:***@db:5432/audit?sslmode=require"
        );
        assert_eq!(
            redact_url("postgres://db:5432/audit"),
            "postgres://db:5432/audit"
        );
        let cfg = AuditConfig {
            postgres_url: Some("postgres://u:hunter2@h/d".into()),
            ..Default::default()
        };
        assert!(!format!("{cfg:?}").contains("hunter2"));
    }

    #[test]
    fn validation_names_the_key() {
        let cfg = AuditConfig {
            batch_size: 0,
            ..Default::default()
        };
        assert!(cfg
            .validate()
            .unwrap_err()
            .to_string()
            .contains("audit.batch_size"));
        let cfg = AuditConfig {
            schema: "Robert'); DROP".into(),
            ..Default::default()
        };
        assert!(cfg
            .validate()
            .unwrap_err()
            .to_string()
            .contains("audit.schema"));
        let cfg = AuditConfig {
            postgres_url: Some("postgres://u:hunter2@h:notaport/d".into()),
            ..Default::default()
        };
        let e = cfg.validate().unwrap_err().to_string();
        assert!(
            e.contains("audit.postgres_url") && !e.contains("hunter2"),
            "{e}"
        );
        AuditConfig::default().validate().unwrap();
    }

    #[test]
    fn parses_with_defaults_and_refuses_unknown_keys() {
        let c: AuditConfig = toml::from_str("batch_size = 10\nfsync = \"always\"").unwrap();
        assert_eq!(c.batch_size, 10);
        assert_eq!(c.fsync, FsyncPolicy::Always);
        assert_eq!(c.queue_capacity, 40_000);
        assert!(toml::from_str::<AuditConfig>("bogus = 1").is_err());
    }

    #[test]
    fn a_table_reports_every_mistake_at_its_key() {
        #[derive(serde::Deserialize)]
        struct File {
            audit: SpannedTable,
        }
        let text = "[audit]\nbatch_size = 0\nbogus = 1\npool_size = \"two\"\nschema = \"Bad\"\n";
        let file: File = toml::from_str(text).unwrap();
        let problems = AuditConfig::from_table(&file.audit).unwrap_err();
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        // Shape mistakes first, then the values of the keys whose shape is right.
        assert_eq!(
            keys,
            [
                "audit.bogus",
                "audit.pool_size",
                "audit.schema",
                "audit.batch_size"
            ],
            "{problems:?}"
        );
        assert_eq!(problems[0].span.clone().map(|s| &text[s]), Some("1"));
        assert_eq!(problems[3].span.clone().map(|s| &text[s]), Some("0"));
    }
}
