//! `fake-google [--config FILE] [--listen ADDR] [--issuer URL] [--user EMAIL[=GROUP,…]]…`
//!
//! Prints `listening on http://ADDR` on stdout once bound; logs go to stderr.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use clap::Parser;

use fake_google::config::{user_map, FileConfig, User};
use fake_google::keys::{SigningKey, TEST_SIGNING_KEY_PEM};
use fake_google::state::State;

#[derive(Parser, Debug)]
#[command(
    name = "fake-google",
    about = "A fake Google (OIDC, JWKS, Directory API, STS, IAM) for tests"
)]
struct Cli {
    /// TOML file with users, clients, service accounts (see docs/sidecar.md).
    #[arg(long, env = "FAKE_GOOGLE_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on; port 0 picks a free port.
    #[arg(long)]
    listen: Option<String>,
    /// Issuer URL (default: http://{bound address}).
    #[arg(long)]
    issuer: Option<String>,
    /// A verified Workspace user of the email's domain: EMAIL or EMAIL=GROUP,GROUP.
    #[arg(long = "user")]
    users: Vec<String>,
    /// A service account allowed to use the JWT-bearer grant and IAM impersonation.
    #[arg(long = "service-account")]
    service_accounts: Vec<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    let file = match &cli.config {
        Some(p) => FileConfig::load(p)?,
        None => FileConfig::default(),
    };
    let mut users = Vec::new();
    for u in &file.users {
        users.push(User::from_config(u)?);
    }
    for f in &cli.users {
        users.push(User::from_flag(f)?);
    }
    let key_pem = match &file.signing_key_file {
        Some(p) => std::fs::read_to_string(p).with_context(|| format!("reading {p}"))?,
        None => TEST_SIGNING_KEY_PEM.to_string(),
    };
    let key = SigningKey::from_pem(&key_pem).context("signing key")?;
    let listen = cli
        .listen
        .or(file.listen.clone())
        .unwrap_or_else(|| "127.0.0.1:0".to_string());
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let addr = listener.local_addr()?;
    let issuer = cli
        .issuer
        .or(file.issuer.clone())
        .unwrap_or_else(|| format!("http://{addr}"))
        .trim_end_matches('/')
        .to_string();
    let mut service_accounts: Vec<String> = file
        .service_accounts
        .iter()
        .map(|s| s.email.clone())
        .collect();
    service_accounts.extend(cli.service_accounts);
    let state = Arc::new(State {
        issuer,
        key,
        clients: file.clients.clone(),
        service_accounts,
        wif_audience: file.wif.audience.clone(),
        directory_page_size: file.directory_page_size.unwrap_or(200).max(1),
        users: Mutex::new(user_map(users)),
        codes: Mutex::new(HashMap::new()),
        tokens: Mutex::new(HashMap::new()),
        counters: Mutex::new(BTreeMap::new()),
    });
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on http://{addr}")?;
        out.flush()?;
    }
    tracing::info!(%addr, issuer = %state.issuer, "fake Google ready");
    fake_google::server::serve(listener, state).await;
    Ok(())
}
