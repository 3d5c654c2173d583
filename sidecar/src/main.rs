//! `mcp-oauth-sidecar [--config FILE] [--check] [--rotate-key]`
//!
//! Without `--config` (or `MCP_OAUTH_SIDECAR_CONFIG`): `ops/config/sidecar.$CONFIG_ENV.toml`,
//! `CONFIG_ENV` defaulting to `development`. `${secret:…}` references are loaded from
//! AWS Secrets Manager before the configuration is validated. Prints
//! `listening on http://ADDR` on stdout once bound; logs go to stderr. SIGTERM or
//! SIGINT stops it: `/readyz` fails for `server.stop_delay_s`, open connections are
//! drained for at most `server.drain_s`, then the audit queue is written out.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;

use config_refs::SecretStore;
use mcp_audit::Auditor;
use mcp_oauth_sidecar::app::App;
use mcp_oauth_sidecar::audit::{AuditLogSink, AuditSink, TracingAuditSink};
use mcp_oauth_sidecar::config::{self, Config, LogFormat};
use mcp_oauth_sidecar::keys::KeyRing;
use mcp_oauth_sidecar::store::Store;

#[derive(Parser, Debug)]
#[command(
    name = "mcp-oauth-sidecar",
    version,
    about = "OAuth 2.1 authorization server for the MCP gateway"
)]
struct Cli {
    /// Configuration file (TOML). Default: `ops/config/sidecar.$CONFIG_ENV.toml`, with
    /// CONFIG_ENV defaulting to `development`.
    #[arg(long, env = "MCP_OAUTH_SIDECAR_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Validate the configuration and exit (0 when good).
    #[arg(long)]
    check: bool,
    /// Generate a new signing key, keep the old one published until its tokens
    /// expire, and exit (generated keys only).
    #[arg(long)]
    rotate_key: bool,
}

/// Logs (the shape shared with the gateway) and traces (`[tracing]`, `OTEL_*`).
fn init_telemetry(cfg: &Config) -> anyhow::Result<mcp_telemetry::Telemetry> {
    let env = |k: &str| std::env::var(k).ok();
    let traces = cfg.tracing.resolve("mcp-oauth-sidecar", &env)?;
    let format = match cfg.server.log_format {
        LogFormat::Json => mcp_telemetry::LogFormat::Json,
        LogFormat::Pretty => mcp_telemetry::LogFormat::Pretty,
    };
    Ok(mcp_telemetry::init(
        format,
        "info,tokio_postgres=warn",
        traces.as_ref(),
    )?)
}

/// Loads the configuration, first fetching the secrets it refers to.
async fn load_config(path: &std::path::Path) -> anyhow::Result<Config> {
    let text = Config::read(path)?;
    let names = config::secret_names_in(&text, &path.display().to_string())?;
    if names.is_empty() {
        return Ok(Config::from_file_text(&text, path, None)?);
    }
    let store = SecretStore::connect().await;
    store.load(&names).await?;
    Ok(Config::from_file_text(&text, path, Some(&store))?)
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let path = cli
        .config
        .clone()
        .unwrap_or_else(|| config::default_path(std::env::var("CONFIG_ENV").ok().as_deref()));
    let cfg = match load_config(&path).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mcp-oauth-sidecar: configuration error: {e:#}");
            std::process::exit(2);
        }
    };
    if cli.check {
        println!("configuration ok");
        return;
    }
    let telemetry = match init_telemetry(&cfg) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("mcp-oauth-sidecar: configuration error: {e:#}");
            std::process::exit(2);
        }
    };
    let result = run(cli, cfg).await;
    // The exporter's client blocks: flushed off the runtime's threads.
    let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
    if let Err(e) = result {
        tracing::error!("{e:#}");
        eprintln!("mcp-oauth-sidecar: {e:#}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli, cfg: Config) -> anyhow::Result<()> {
    if cli.rotate_key {
        if cfg.tokens.signing_key.is_some() {
            anyhow::bail!("the signing key comes from the configuration; change [tokens] signing_key to rotate it");
        }
        let store = Store::connect(&cfg.store).await.context("database")?;
        let kid = KeyRing::rotate(&store).await?;
        println!("new signing key {kid}");
        return Ok(());
    }
    let listener = tokio::net::TcpListener::bind(&cfg.server.listen)
        .await
        .with_context(|| format!("binding {}", cfg.server.listen))?;
    let addr = listener.local_addr()?;
    let mut cfg = cfg;
    if cfg.server.issuer.is_none() {
        cfg.issuer = config::HttpUrl::parse(&format!("http://{addr}")).context("issuer")?;
    }
    // Before anything is announced, so that a SIGTERM always gets the graceful stop.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("SIGTERM handler")?;
    let audit_log = match cfg.audit.clone() {
        Some(audit) => {
            let auditor = Auditor::start(audit).await.context("audit log")?;
            Some(Arc::new(AuditLogSink::new(auditor)))
        }
        None => None,
    };
    let sink: Arc<dyn AuditSink> = match &audit_log {
        Some(s) => s.clone(),
        None => Arc::new(TracingAuditSink),
    };
    let sink: Arc<dyn AuditSink> = Arc::new(mcp_oauth_sidecar::metrics::CountingSink(sink));
    let app = match App::new(cfg, sink).await {
        Ok(app) => Arc::new(app),
        Err(e) => {
            if let Some(a) = &audit_log {
                a.shutdown().await;
            }
            return Err(e.into());
        }
    };
    if let Some(listen) = &app.cfg.metrics_listen {
        let metrics = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding the metrics listener {listen}"))?;
        let maddr = metrics.local_addr()?;
        mcp_oauth_sidecar::metrics::get();
        mcp_oauth_sidecar::metrics::PoolCollector::register(app.store.clone());
        tokio::spawn(mcp_oauth_sidecar::metrics::serve(metrics));
        let mut out = std::io::stdout().lock();
        writeln!(out, "metrics on http://{maddr}/metrics")?;
    }
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on http://{addr}")?;
        out.flush()?;
    }
    if !app.google.tokens.enabled() {
        tracing::warn!(
            access_token_ttl_s = app.cfg.tokens.access_token_ttl.as_secs(),
            "no Directory credentials ([google.credentials] source = \"none\"): a refresh cannot see offboarding (a suspended, archived or deleted person keeps refreshing until the family's tokens.refresh_token_ttl_s ends), and access tokens live tokens.access_token_ttl_s; configure [google.credentials] for Directory users.get and groups"
        );
    }
    tracing::info!(%addr, issuer = %app.cfg.issuer, mode = ?app.cfg.server.mode,
        audit = if audit_log.is_some() { "audit log" } else { "log" }, "authorization server ready");
    let stop = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: stopping"),
            _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        }
    };
    mcp_oauth_sidecar::server::serve(listener, app, stop).await;
    if let Some(a) = &audit_log {
        a.shutdown().await;
        tracing::info!("audit log written out");
    }
    Ok(())
}
