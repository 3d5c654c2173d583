//! `mcp-gateway audit tail|stats`: the audit log for people.
//!
//! Reads PostgreSQL (`--postgres-url`, or the `[audit]` table of `--config`); when the
//! configuration has no database, reads the JSON Lines file the gateway writes instead.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;

use super::config::{redact_url, valid_identifier, AuditConfig};
use super::event::AuditEvent;
use super::postgres::connect_once;

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
            AuditCommand::Tail(t) => tail(&source, t, out).await,
            AuditCommand::Stats(s) => stats(&source, s, out).await,
        }
    })
}

/// Expands `${env:NAME}`; any other reference is an error naming `--postgres-url`.
pub fn expand_env(value: &str) -> anyhow::Result<String> {
    expand_env_impl(value)
}

fn expand_env_impl(value: &str) -> anyhow::Result<String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| anyhow!("unterminated \"${{\" in audit.postgres_url"))?;
        match after[..end].split_once(':') {
            Some(("env", name)) => out.push_str(
                &std::env::var(name)
                    .map_err(|_| anyhow!("environment variable {name} is not set"))?,
            ),
            _ => bail!(
                "audit.postgres_url uses \"${{{}}}\", which this command cannot resolve; \
                 pass --postgres-url",
                &after[..end]
            ),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
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

#[derive(Default, Clone)]
struct Filter {
    since: Option<DateTime<Utc>>,
    user: Option<String>,
    backend: Option<String>,
    target: Option<String>,
    errors: bool,
}

impl Filter {
    fn matches(&self, e: &AuditEvent) -> bool {
        self.since.is_none_or(|s| e.ts >= s)
            && self.user.as_ref().is_none_or(|u| {
                e.sub.as_deref() == Some(u.as_str()) || e.email.as_deref() == Some(u.as_str())
            })
            && self
                .backend
                .as_ref()
                .is_none_or(|b| e.backend.as_deref() == Some(b.as_str()))
            && self
                .target
                .as_ref()
                .is_none_or(|t| e.target.as_deref() == Some(t.as_str()))
            && (!self.errors || e.is_error())
    }

    /// `WHERE …` with positional parameters from `$first`.
    fn sql(
        &self,
    ) -> (
        String,
        Vec<Box<dyn tokio_postgres::types::ToSql + Sync + Send>>,
    ) {
        let mut clauses: Vec<String> = Vec::new();
        let mut params: Vec<Box<dyn tokio_postgres::types::ToSql + Sync + Send>> = Vec::new();
        if let Some(s) = self.since {
            params.push(Box::new(s));
            clauses.push(format!("ts >= ${}", params.len()));
        }
        if let Some(u) = &self.user {
            params.push(Box::new(u.clone()));
            // An email (what people type) is read from the `(email, ts, id)` index; a
            // sub is looked up in both columns.
            if u.contains('@') {
                clauses.push(format!("email = ${}", params.len()));
            } else {
                clauses.push(format!("(sub = ${0} OR email = ${0})", params.len()));
            }
        }
        if let Some(b) = &self.backend {
            params.push(Box::new(b.clone()));
            clauses.push(format!("backend = ${}", params.len()));
        }
        if let Some(t) = &self.target {
            params.push(Box::new(t.clone()));
            clauses.push(format!("target = ${}", params.len()));
        }
        if self.errors {
            clauses.push("(http_status >= 400 OR rpc_error IS NOT NULL)".into());
        }
        let w = if clauses.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", clauses.join(" AND "))
        };
        (w, params)
    }
}

const COLUMNS: &str = "id, ts, kind, sub, email, groups, client_id, session, request_id, \
    rpc_method, backend, target, args_digest, args, http_status, rpc_error, latency_ms, \
    bytes_in, bytes_out, source_addr, user_agent, detail";

fn event_of(r: &tokio_postgres::Row) -> AuditEvent {
    AuditEvent {
        id: r.get(0),
        ts: r.get(1),
        kind: r.get(2),
        sub: r.get(3),
        email: r.get(4),
        groups: r.get(5),
        client_id: r.get(6),
        session: r.get(7),
        request_id: r.get(8),
        rpc_method: r.get(9),
        backend: r.get(10),
        target: r.get(11),
        args_digest: r.get(12),
        args: r.get(13),
        http_status: r.get::<_, i32>(14).clamp(0, u16::MAX as i32) as u16,
        rpc_error: r.get(15),
        latency_ms: r.get(16),
        bytes_in: r.get::<_, i64>(17).max(0) as u64,
        bytes_out: r.get::<_, i64>(18).max(0) as u64,
        source_addr: r.get(19),
        user_agent: r.get(20),
        detail: r.get(21),
    }
}

async fn pg_client(cfg: &AuditConfig, url: &str) -> anyhow::Result<tokio_postgres::Client> {
    connect_once(cfg, url)
        .await
        .map_err(|e| anyhow!("cannot connect to {}: {e}", redact_url(url)))
}

/// How far back [`pg_events`] looks first, in seconds; each next look goes ten times
/// further, and after the last, without a bound.
const LOOK_BACK_SECS: [i64; 7] = [10, 100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000];

/// Events matching `f`, newest first, at most `limit`.
///
/// No b-tree orders the table by time alone (a BRIN index on `ts` finds time ranges), so
/// "the newest N" is asked of the last 10 s, then 100 s, … until N rows are found or
/// `f.since` (or the start of the table) is reached. The answer is the same as one
/// query over everything: when a window holds N rows, the newest N are all in it.
async fn pg_events(
    client: &tokio_postgres::Client,
    schema: &str,
    f: &Filter,
    limit: usize,
) -> anyhow::Result<Vec<AuditEvent>> {
    let limit = limit.min(1_000_000);
    let now = Utc::now();
    let mut cuts = LOOK_BACK_SECS
        .iter()
        .map(|s| now - chrono::Duration::seconds(*s));
    loop {
        let mut g = f.clone();
        // The window's start, never before `--since`; after the last cut, `--since`.
        g.since = match cuts.next() {
            Some(c) => Some(f.since.map_or(c, |s| c.max(s))),
            None => f.since,
        };
        let (w, params) = g.sql();
        let q = format!(
            "SELECT {COLUMNS} FROM \"{schema}\".audit_events {w} \
             ORDER BY ts DESC, id DESC LIMIT {limit}"
        );
        let rows = pg_query(client, &q, &params).await?;
        if rows.len() >= limit || g.since == f.since {
            return Ok(rows.iter().map(event_of).collect());
        }
    }
}

/// Runs `q` with `params`; a PostgreSQL error is put in words for people.
async fn pg_query(
    client: &tokio_postgres::Client,
    q: &str,
    params: &[Box<dyn tokio_postgres::types::ToSql + Sync + Send>],
) -> anyhow::Result<Vec<tokio_postgres::Row>> {
    let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
        params.iter().map(|p| p.as_ref() as _).collect();
    client
        .query(q, &refs)
        .await
        .map_err(|e| anyhow!("{}", describe_pg_error(&e)))
}

fn describe_pg_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) if db.code().code() == "42P01" => {
            "no audit table here: the gateway creates it at its first start with this \
             postgres_url and schema"
                .into()
        }
        Some(db) => db.message().to_string(),
        None => e.to_string(),
    }
}

/// Reads the JSON Lines file, calling `each` for every event that parses.
fn scan_file(path: &Path, mut each: impl FnMut(AuditEvent)) -> anyhow::Result<()> {
    let f = std::fs::File::open(path).with_context(|| {
        format!(
            "cannot read the audit file {} (no postgres_url is configured; pass \
             --postgres-url or --config)",
            path.display()
        )
    })?;
    for line in std::io::BufReader::new(f).lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        if let Ok(e) = serde_json::from_str::<AuditEvent>(&line) {
            each(e);
        }
    }
    Ok(())
}

fn user_of(e: &AuditEvent) -> String {
    e.email
        .clone()
        .or_else(|| e.sub.clone())
        .unwrap_or_else(|| "-".into())
}

fn outcome(e: &AuditEvent) -> String {
    match e.rpc_error {
        Some(c) => format!("{} {c}", e.http_status),
        None => e.http_status.to_string(),
    }
}

fn print_table(out: &mut dyn Write, header: &[&str], rows: &[Vec<String>]) -> std::io::Result<()> {
    let mut w: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count().min(60));
        }
    }
    let line = |cells: Vec<String>| -> String {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            let c: String = if c.chars().count() > 60 {
                c.chars().take(59).chain(std::iter::once('…')).collect()
            } else {
                c.clone()
            };
            if i + 1 == cells.len() {
                s.push_str(&c);
            } else {
                s.push_str(&format!("{c:<width$}  ", width = w[i]));
            }
        }
        s.trim_end().to_string()
    };
    writeln!(
        out,
        "{}",
        line(header.iter().map(|h| h.to_string()).collect())
    )?;
    for r in rows {
        writeln!(out, "{}", line(r.clone()))?;
    }
    Ok(())
}

const TAIL_HEADER: &[&str] = &[
    "TIME", "USER", "METHOD", "BACKEND", "TARGET", "STATUS", "MS", "REQUEST", "DETAIL",
];

fn tail_row(e: &AuditEvent) -> Vec<String> {
    let method = if e.kind == super::event::KIND_REQUEST {
        e.rpc_method.clone().unwrap_or_else(|| "-".into())
    } else {
        format!("[{}]", e.kind)
    };
    vec![
        e.ts.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        user_of(e),
        method,
        e.backend.clone().unwrap_or_else(|| "-".into()),
        e.target.clone().unwrap_or_else(|| "-".into()),
        outcome(e),
        format!("{:.1}", e.latency_ms),
        e.request_id.clone().unwrap_or_else(|| "-".into()),
        e.detail.clone().unwrap_or_default(),
    ]
}

fn print_events(
    out: &mut dyn Write,
    events: &[AuditEvent],
    json: bool,
    header: bool,
) -> anyhow::Result<()> {
    if json {
        for e in events {
            writeln!(out, "{}", serde_json::to_string(e)?)?;
        }
    } else if header {
        let rows: Vec<Vec<String>> = events.iter().map(tail_row).collect();
        print_table(out, TAIL_HEADER, &rows)?;
    } else {
        for e in events {
            writeln!(out, "{}", tail_row(e).join("  ").trim_end())?;
        }
    }
    out.flush()?;
    Ok(())
}

async fn tail(source: &Source, a: &TailArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let now = Utc::now();
    let f = Filter {
        since: a
            .since
            .as_deref()
            .map(|s| parse_since(s, now))
            .transpose()?,
        user: a.user.clone(),
        backend: a.backend.clone(),
        target: a.target.clone(),
        errors: a.errors,
    };
    match source {
        Source::Postgres { cfg, url } => {
            let client = pg_client(cfg, url).await?;
            let mut events = pg_events(&client, &cfg.schema, &f, a.limit).await?;
            events.reverse();
            print_events(out, &events, a.json, true)?;
            if !a.follow {
                return Ok(());
            }
            // Rows can land late (batching, spool replay): look back a while and skip
            // what was shown.
            let mut seen: HashSet<uuid::Uuid> = events.iter().map(|e| e.id).collect();
            let mut order: VecDeque<uuid::Uuid> = events.iter().map(|e| e.id).collect();
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let mut g = f.clone();
                let back = Utc::now() - chrono::Duration::minutes(10);
                g.since = Some(f.since.map_or(back, |s| s.max(back)));
                let mut fresh = pg_events(&client, &cfg.schema, &g, 10_000).await?;
                fresh.retain(|e| !seen.contains(&e.id));
                fresh.reverse();
                for e in &fresh {
                    seen.insert(e.id);
                    order.push_back(e.id);
                }
                while order.len() > 200_000 {
                    if let Some(old) = order.pop_front() {
                        seen.remove(&old);
                    }
                }
                print_events(out, &fresh, a.json, false)?;
            }
        }
        Source::File(path) => {
            let mut last: VecDeque<AuditEvent> = VecDeque::new();
            scan_file(path, |e| {
                if f.matches(&e) {
                    last.push_back(e);
                    if last.len() > a.limit {
                        last.pop_front();
                    }
                }
            })?;
            let mut events: Vec<AuditEvent> = last.into();
            events.sort_by_key(|e| (e.ts, e.id));
            print_events(out, &events, a.json, true)?;
            if a.follow {
                bail!(
                    "--follow reads PostgreSQL; for the file, use tail -f {}",
                    path.display()
                );
            }
            Ok(())
        }
    }
}

/// One row of a stats table.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StatRow {
    pub key: Vec<String>,
    pub calls: i64,
    pub errors: i64,
    pub error_rate: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
struct Report {
    since: DateTime<Utc>,
    total: StatRow,
    by_backend_target: Vec<StatRow>,
    by_user: Vec<StatRow>,
    by_kind: Vec<StatRow>,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let pos = p * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

#[derive(Default)]
struct Acc {
    errors: i64,
    lat: Vec<f64>,
}

impl Acc {
    fn add(&mut self, e: &AuditEvent) {
        self.errors += e.is_error() as i64;
        self.lat.push(e.latency_ms);
    }
    fn row(mut self, key: Vec<String>) -> StatRow {
        self.lat.sort_by(|a, b| a.total_cmp(b));
        let calls = self.lat.len() as i64;
        StatRow {
            key,
            calls,
            errors: self.errors,
            error_rate: if calls > 0 {
                self.errors as f64 / calls as f64
            } else {
                0.0
            },
            p50_ms: percentile(&self.lat, 0.5),
            p99_ms: percentile(&self.lat, 0.99),
        }
    }
}

fn top(map: HashMap<Vec<String>, Acc>, n: usize) -> Vec<StatRow> {
    let mut rows: Vec<StatRow> = map.into_iter().map(|(k, a)| a.row(k)).collect();
    rows.sort_by(|a, b| b.calls.cmp(&a.calls).then_with(|| a.key.cmp(&b.key)));
    rows.truncate(n);
    rows
}

async fn pg_stats(
    client: &tokio_postgres::Client,
    schema: &str,
    f: &Filter,
    group: &[&str],
    requests_only: bool,
    limit: usize,
) -> anyhow::Result<Vec<StatRow>> {
    let (mut w, params) = f.sql();
    if requests_only {
        w = if w.is_empty() {
            "WHERE kind = 'request'".into()
        } else {
            format!("{w} AND kind = 'request'")
        };
    }
    let keys: Vec<String> = group
        .iter()
        .map(|g| format!("coalesce({g}, '-')"))
        .collect();
    let (select_keys, group_by) = if keys.is_empty() {
        ("ARRAY[]::text[]".to_string(), String::new())
    } else {
        (
            format!("ARRAY[{}]", keys.join(", ")),
            format!(
                "GROUP BY {}",
                (1..=keys.len())
                    .map(|i| format!("k{i}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
    };
    let named: Vec<String> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| format!("{k} AS k{}", i + 1))
        .collect();
    let inner_keys = if named.is_empty() {
        String::new()
    } else {
        format!("{}, ", named.join(", "))
    };
    let outer_keys = if keys.is_empty() {
        select_keys
    } else {
        format!(
            "ARRAY[{}]",
            (1..=keys.len())
                .map(|i| format!("k{i}"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let q = format!(
        "SELECT {outer_keys}, count(*), \
           count(*) FILTER (WHERE http_status >= 400 OR rpc_error IS NOT NULL), \
           coalesce(percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms), 0), \
           coalesce(percentile_cont(0.99) WITHIN GROUP (ORDER BY latency_ms), 0) \
         FROM (SELECT {inner_keys}http_status, rpc_error, latency_ms \
               FROM \"{schema}\".audit_events {w}) x \
         {group_by} ORDER BY 2 DESC, 1 LIMIT {limit}"
    );
    let rows = pg_query(client, &q, &params).await?;
    Ok(rows
        .iter()
        .map(|r| {
            let calls: i64 = r.get(1);
            let errors: i64 = r.get(2);
            StatRow {
                key: r.get(0),
                calls,
                errors,
                error_rate: if calls > 0 {
                    errors as f64 / calls as f64
                } else {
                    0.0
                },
                p50_ms: r.get(3),
                p99_ms: r.get(4),
            }
        })
        .collect())
}

async fn stats(source: &Source, a: &StatsArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let since = parse_since(&a.since, Utc::now())?;
    let f = Filter {
        since: Some(since),
        user: a.user.clone(),
        backend: a.backend.clone(),
        target: None,
        errors: false,
    };
    let report = match source {
        Source::Postgres { cfg, url } => {
            let client = pg_client(cfg, url).await?;
            let s = &cfg.schema;
            let total = pg_stats(&client, s, &f, &[], true, 1)
                .await?
                .pop()
                .unwrap_or_else(|| Acc::default().row(vec![]));
            Report {
                since,
                total,
                by_backend_target: pg_stats(&client, s, &f, &["backend", "target"], true, a.top)
                    .await?,
                by_user: pg_stats(&client, s, &f, &["coalesce(email, sub)"], true, a.top).await?,
                by_kind: pg_stats(&client, s, &f, &["kind"], false, a.top).await?,
            }
        }
        Source::File(path) => {
            let mut total = Acc::default();
            let mut by_target: HashMap<Vec<String>, Acc> = HashMap::new();
            let mut by_user: HashMap<Vec<String>, Acc> = HashMap::new();
            let mut by_kind: HashMap<Vec<String>, Acc> = HashMap::new();
            let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
            scan_file(path, |e| {
                if !f.matches(&e) {
                    return;
                }
                by_kind.entry(vec![e.kind.clone()]).or_default().add(&e);
                if e.kind != super::event::KIND_REQUEST {
                    return;
                }
                total.add(&e);
                by_target
                    .entry(vec![dash(&e.backend), dash(&e.target)])
                    .or_default()
                    .add(&e);
                by_user.entry(vec![user_of(&e)]).or_default().add(&e);
            })?;
            Report {
                since,
                total: total.row(vec![]),
                by_backend_target: top(by_target, a.top),
                by_user: top(by_user, a.top),
                by_kind: top(by_kind, a.top),
            }
        }
    };
    if a.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
        return Ok(());
    }
    let t = &report.total;
    writeln!(
        out,
        "since {} : {} requests, {} errors ({:.2}%), p50 {:.1} ms, p99 {:.1} ms",
        report.since.format("%Y-%m-%dT%H:%M:%SZ"),
        t.calls,
        t.errors,
        t.error_rate * 100.0,
        t.p50_ms,
        t.p99_ms
    )?;
    let cells = |r: &StatRow| -> Vec<String> {
        let mut v = r.key.clone();
        v.extend([
            r.calls.to_string(),
            r.errors.to_string(),
            format!("{:.2}%", r.error_rate * 100.0),
            format!("{:.1}", r.p50_ms),
            format!("{:.1}", r.p99_ms),
        ]);
        v
    };
    let sections: [(&[&str], &Vec<StatRow>); 3] = [
        (
            &[
                "BACKEND", "TARGET", "CALLS", "ERRORS", "ERROR%", "P50_MS", "P99_MS",
            ],
            &report.by_backend_target,
        ),
        (
            &["USER", "CALLS", "ERRORS", "ERROR%", "P50_MS", "P99_MS"],
            &report.by_user,
        ),
        (
            &["KIND", "EVENTS", "ERRORS", "ERROR%", "P50_MS", "P99_MS"],
            &report.by_kind,
        ),
    ];
    for (header, rows) in sections {
        writeln!(out)?;
        let rows: Vec<Vec<String>> = rows.iter().map(cells).collect();
        print_table(out, header, &rows)?;
    }
    Ok(())
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

    #[test]
    fn percentiles_interpolate_like_postgres() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&v, 0.5), 2.5);
        assert!((percentile(&v, 0.99) - 3.97).abs() < 1e-9);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }
}
