//! `mcp-oauth-sidecar --config FILE [--check] [--rotate-key]`
//!
//! Prints `listening on http://ADDR` on stdout once bound; logs go to stderr.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;

use mcp_oauth_sidecar::app::App;
use mcp_oauth_sidecar::audit::TracingAuditSink;
use mcp_oauth_sidecar::config::{Config, LogFormat};
use mcp_oauth_sidecar::keys::KeyRing;
use mcp_oauth_sidecar::store::Store;

#[derive(Parser, Debug)]
#[command(
    name = "mcp-oauth-sidecar",
    version,
    about = "OAuth 2.1 authorization server for the MCP gateway"
)]
struct Cli {
    /// Configuration file (TOML).
    #[arg(long, env = "MCP_OAUTH_SIDECAR_CONFIG")]
    config: PathBuf,
    /// Validate the configuration and exit (0 when good).
    #[arg(long)]
    check: bool,
    /// Generate a new signing key, keep the old one published until its tokens
    /// expire, and exit (generated keys only).
    #[arg(long)]
    rotate_key: bool,
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,tokio_postgres=warn"));
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Pretty => builder.init(),
    }
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let cfg = match Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mcp-oauth-sidecar: configuration error: {e}");
            std::process::exit(2);
        }
    };
    if cli.check {
        println!("configuration ok");
        return;
    }
    init_logs(cfg.server.log_format);
    if let Err(e) = run(cli, cfg).await {
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
        cfg.issuer = format!("http://{addr}");
    }
    let app = Arc::new(App::new(cfg, Arc::new(TracingAuditSink)).await?);
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on http://{addr}")?;
        out.flush()?;
    }
    tracing::info!(%addr, issuer = %app.cfg.issuer, mode = ?app.cfg.server.mode, "authorization server ready");
    tokio::select! {
        _ = mcp_oauth_sidecar::server::serve(listener, app) => {}
        _ = tokio::signal::ctrl_c() => tracing::info!("stopping"),
    }
    Ok(())
}
