//! `mcp-gateway audit tail|stats`: the audit log for people.
//!
//! Reads PostgreSQL (`--postgres-url`, or the `[audit]` table of `--config`); when the
//! configuration has no database, reads the JSON Lines file the gateway writes instead.
//!
//! Why a directory: argument parsing and choosing the source live here; the two
//! commands are in [`tail`] and [`stats`], what they share (filters, the PostgreSQL and
//! file readers) in [`query`], and the plain-text table in [`table`]. Nothing here
//! writes to the audit log.

mod query;
mod stats;
mod table;
mod tail;

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use chrono::{DateTime, NaiveDate, Utc};

use super::config::{valid_identifier, AuditConfig};

pub use stats::StatRow;

/// `mcp-gateway audit …`
#[derive(clap::Args, Debug, Clone)]
pub struct AuditCliArgs {
    /// PostgreSQL URL of the audit log (overrides the config file).
    #[arg(
        long,
        env = "MCP_GATEWAY_AUDIT_POSTGRES_URL",
        hide_env_values = true,
        global = true
    )]
    pub postgres_url: Option<String>,
    /// Gateway configuration whose `[audit]` table says where the log is.
    #[arg(long, env = "MCP_GATEWAY_CONFIG", value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// Schema of the audit tables (default: the config's, else `public`).
    #[arg(long, global = true)]
    pub schema: Option<String>,
    #[command(subcommand)]
    pub command: AuditCommand,
}

#[derive(clap::Subcommand, Debug, Clone)]
pub enum AuditCommand {
    /// The most recent events, oldest first.
    Tail(TailArgs),
    /// Calls, error rate and p50/p99 latency per backend and tool, and per user.
    Stats(StatsArgs),
}

#[derive(clap::Args, Debug, Clone)]
pub struct TailArgs {
    /// Only this user (matches `sub` or `email`).
    #[arg(long)]
    pub user: Option<String>,
    /// Only this backend.
    #[arg(long)]
    pub backend: Option<String>,
    /// Only this tool or prompt name, or resource URI.
    #[arg(long)]
    pub target: Option<String>,
    /// Only events since: a duration back from now (`90s`, `15m`, `2h`, `7d`, `1w`) or
    /// a time (`2025-06-01`, `2025-06-01T12:00:00Z`).
    #[arg(long, value_name = "DURATION|TIMESTAMP")]
    pub since: Option<String>,
    /// Only errors (HTTP status ≥ 400 or a JSON-RPC error).
    #[arg(long)]
    pub errors: bool,
    /// At most this many events.
    #[arg(long, short = 'n', default_value_t = 50)]
    pub limit: usize,
    /// One JSON object per line (the stored record) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Keep printing new events as they arrive (every second).
    #[arg(long, short = 'f')]
    pub follow: bool,
}

#[derive(clap::Args, Debug, Clone)]
pub struct StatsArgs {
    /// Window: a duration back from now or a time, as for `tail`.
    #[arg(long, value_name = "DURATION|TIMESTAMP", default_value = "24h")]
    pub since: String,
    /// Only this user (matches `sub` or `email`).
    #[arg(long)]
    pub user: Option<String>,
    /// Only this backend.
    #[arg(long)]
    pub backend: Option<String>,
    /// Rows per table.
    #[arg(long, default_value_t = 20)]
    pub top: usize,
    /// The report as one JSON document.
    #[arg(long)]
    pub json: bool,
}

/// Runs the command; `${env:NAME}` in the config's `postgres_url` is expanded.
pub fn run(args: AuditCliArgs) -> anyhow::Result<()> {
    run_with(args, &expand_env)
}

/// As [`run`], with the caller's expansion of references (`${env:..}`, `${secret:..}`)
/// in the config's `postgres_url`.
pub fn run_with(
    args: AuditCliArgs,
    expand: &dyn Fn(&str) -> anyhow::Result<String>,
) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    run_to(args, expand, &mut out)
}

/// As [`run_with`], printing to `out`. Builds its own runtime: call it outside one.
pub fn run_to(
    args: AuditCliArgs,
    expand: &dyn Fn(&str) -> anyhow::Result<String>,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let source = resolve_source(&args, expand)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        match &args.command {
            AuditCommand::Tail(t) => tail::tail(&source, t, out).await,
            AuditCommand::Stats(s) => stats::stats(&source, s, out).await,
        }
    })
}

/// Expands `${env:NAME}` (and `${file:PATH}`) with the workspace's one expander,
/// [`config_refs::expand`]; `${secret:…}` is an error here (no secret store: the
/// gateway's `audit` command passes its own expansion to [`run_with`]).
pub fn expand_env(value: &str) -> anyhow::Result<String> {
    let env = |n: &str| std::env::var(n).ok();
    config_refs::expand(value, &config_refs::Sources::without_secrets(&env))
        .map_err(|e| anyhow!("audit.postgres_url: {e}; pass --postgres-url"))
}

enum Source {
    Postgres { cfg: Box<AuditConfig>, url: String },
    File(PathBuf),
}

fn load_audit_table(path: &Path) -> anyhow::Result<AuditConfig> {
    #[derive(serde::Deserialize)]
    struct Outer {
        #[serde(default)]
        audit: Option<toml::Value>,
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let outer: Outer =
        toml::from_str(&text).with_context(|| format!("{}: not valid TOML", path.display()))?;
    match outer.audit {
        None => Ok(AuditConfig::default()),
        Some(v) => v
            .try_into()
            .with_context(|| format!("{}: [audit]", path.display())),
    }
}

fn resolve_source(
    args: &AuditCliArgs,
    expand: &dyn Fn(&str) -> anyhow::Result<String>,
) -> anyhow::Result<Source> {
    let mut cfg = match &args.config {
        Some(p) => load_audit_table(p)?,
        None => AuditConfig::default(),
    };
    if let Some(s) = &args.schema {
        cfg.schema = s.clone();
    }
    if !valid_identifier(&cfg.schema) {
        bail!("schema {:?} is not a plain identifier", cfg.schema);
    }
    let url = match &args.postgres_url {
        Some(u) => Some(u.clone()),
        None => match &cfg.postgres_url {
            Some(u) => Some(expand(u)?),
            None => None,
        },
    };
    match url {
        Some(url) => {
            cfg.pg_config_of(&url).map_err(|e| anyhow!("{e}"))?;
            Ok(Source::Postgres {
                cfg: Box::new(cfg),
                url,
            })
        }
        None => Ok(Source::File(cfg.file.clone())),
    }
}

/// `15m`, `2h`, `7d`, `1w`, `30s` back from `now`, or an RFC 3339 time, or a date.
pub fn parse_since(s: &str, now: DateTime<Utc>) -> anyhow::Result<DateTime<Utc>> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        if let Some(t) = d.and_hms_opt(0, 0, 0) {
            return Ok(t.and_utc());
        }
    }
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| anyhow!("--since {s:?}: add a unit (s, m, h, d, w)"))?;
    let (n, unit) = s.split_at(split);
    let n: i64 = n
        .parse()
        .map_err(|_| anyhow!("--since {s:?}: expected e.g. 15m, 2h, 7d or 2025-06-01T00:00:00Z"))?;
    let secs = match unit {
        "s" => 1,
        "m" | "min" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => bail!("--since {s:?}: unknown unit {unit:?} (s, m, h, d, w)"),
    };
    Ok(now - chrono::Duration::seconds(n.saturating_mul(secs)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn since_forms() {
        let now = Utc.with_ymd_and_hms(2025, 6, 10, 12, 0, 0).unwrap();
        assert_eq!(
            parse_since("15m", now).unwrap(),
            Utc.with_ymd_and_hms(2025, 6, 10, 11, 45, 0).unwrap()
        );
        assert_eq!(
            parse_since("2d", now).unwrap(),
            Utc.with_ymd_and_hms(2025, 6, 8, 12, 0, 0).unwrap()
        );
        assert_eq!(
            parse_since("2025-06-01", now).unwrap(),
            Utc.with_ymd_and_hms(2025, 6, 1, 0, 0, 0).unwrap()
        );
        assert_eq!(
            parse_since("2025-06-01T10:00:00+02:00", now).unwrap(),
            Utc.with_ymd_and_hms(2025, 6, 1, 8, 0, 0).unwrap()
        );
        assert!(parse_since("15", now).is_err());
        assert!(parse_since("15y", now).is_err());
    }
}
