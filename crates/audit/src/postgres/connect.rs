//! Connecting to PostgreSQL: the writer's pool and the CLI's single connection, with
//! TLS when the URL or `audit.tls_ca_file` asks for it.
//!
//! Why apart: TLS and pool settings are the part an operator debugs ("why does it not
//! connect?") and they do not depend on what is written. This module does not run any
//! SQL.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime, Timeouts};
use tokio_postgres::config::SslMode;
use tokio_postgres::NoTls;

use crate::config::AuditConfig;
use crate::AuditError;

/// The writer's connection pool; connects lazily.
pub(super) fn pool(cfg: &AuditConfig, url: &str) -> Result<Pool, AuditError> {
    let mut pg = cfg.pg_config_of(url)?;
    let connect_timeout = Duration::from_millis(cfg.connect_timeout_ms);
    pg.connect_timeout(connect_timeout);
    pg.application_name("mcp-gateway-audit");
    let mc = ManagerConfig {
        recycling_method: RecyclingMethod::Fast,
    };
    let mgr = match tls_config(cfg, &pg)? {
        None => Manager::from_config(pg, NoTls, mc),
        Some(tls) => {
            Manager::from_config(pg, tokio_postgres_rustls::MakeRustlsConnect::new(tls), mc)
        }
    };
    Pool::builder(mgr)
        .max_size(cfg.pool_size)
        .runtime(Runtime::Tokio1)
        .timeouts(Timeouts {
            wait: Some(connect_timeout),
            create: Some(connect_timeout),
            recycle: Some(connect_timeout),
        })
        .build()
        .map_err(|e| AuditError::Postgres(format!("connection pool: {e}")))
}

/// TLS for PostgreSQL: none unless the URL says `sslmode=require` or a CA file is
/// given; then rustls, verifying the server certificate against the Mozilla roots plus
/// `tls_ca_file`.
pub(crate) fn tls_config(
    cfg: &AuditConfig,
    pg: &tokio_postgres::Config,
) -> Result<Option<rustls::ClientConfig>, AuditError> {
    let wanted = pg.get_ssl_mode() == SslMode::Require
        || (cfg.tls_ca_file.is_some() && pg.get_ssl_mode() != SslMode::Disable);
    if !wanted {
        return Ok(None);
    }
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = &cfg.tls_ca_file {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::CertificateDer;
        let err = |m: String| AuditError::Config {
            key: "audit.tls_ca_file".into(),
            message: m,
        };
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| err(format!("{}: {e}", path.display())))?;
        for c in certs {
            let c = c.map_err(|e| err(format!("{}: {e}", path.display())))?;
            roots
                .add(c)
                .map_err(|e| err(format!("{}: {e}", path.display())))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| AuditError::Postgres(format!("TLS set-up: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Some(tls))
}

/// Opens one connection (the CLI), spawning its driver on the current runtime.
pub(crate) async fn connect_once(
    cfg: &AuditConfig,
    url: &str,
) -> Result<tokio_postgres::Client, AuditError> {
    let mut pg = cfg.pg_config_of(url)?;
    pg.connect_timeout(Duration::from_millis(cfg.connect_timeout_ms));
    pg.application_name("mcp-gateway-audit-cli");
    let e = |e: tokio_postgres::Error| AuditError::Postgres(e.to_string());
    let client = match tls_config(cfg, &pg)? {
        None => {
            let (client, conn) = pg.connect(NoTls).await.map_err(e)?;
            tokio::spawn(conn);
            client
        }
        Some(tls) => {
            let (client, conn) = pg
                .connect(tokio_postgres_rustls::MakeRustlsConnect::new(tls))
                .await
                .map_err(e)?;
            tokio::spawn(conn);
            client
        }
    };
    Ok(client)
}
