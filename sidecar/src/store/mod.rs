//! Postgres: the pool, the migrations (run at start, idempotent, serialised between
//! replicas by an advisory lock) and, in the submodules, one set of queries per
//! concern. Secrets (refresh tokens, codes, client secrets, browser cookies) are
//! stored only as SHA-256 digests.

mod authz;
mod clients;
mod keys;
mod tokens;

use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use sha2::{Digest, Sha256};
use tokio_postgres::NoTls;

pub use authz::{CodeRecord, CodeRedemption, PendingAuthorization, UserRecord};
pub use clients::ClientRecord;
pub use keys::KeyRecord;
pub use tokens::{FamilyRecord, RefreshOutcome};

use crate::config::StoreConfig;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("database pool: {0}")]
    Pool(String),
    #[error("database configuration: {0}")]
    Config(String),
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        StoreError::Pool(e.to_string())
    }
}

/// Migrations in order; each runs once per schema.
const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("migrations/0001_init.sql")),
    (2, include_str!("migrations/0002_consent_scope.sql")),
    (3, include_str!("migrations/0003_client_expiry.sql")),
];

#[derive(Clone)]
pub struct Store {
    pool: Pool,
}

/// SHA-256 of a secret, the only form in which secrets are stored.
pub fn digest(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

impl Store {
    /// The pool's size, idle connections and limit (for the metrics).
    pub fn pool_status(&self) -> deadpool_postgres::Status {
        self.pool.status()
    }

    /// Connects, creates the schema if needed and runs the migrations.
    pub async fn connect(cfg: &StoreConfig) -> Result<Store, StoreError> {
        let mut pg = tokio_postgres::Config::from_str(&cfg.url)
            .map_err(|e| StoreError::Config(e.to_string()))?;
        // The schema name is validated by the config ([a-z0-9_]), so it is safe here.
        pg.options(format!("-c search_path={}", cfg.schema));
        pg.connect_timeout(Duration::from_secs(10));
        pg.application_name("mcp-oauth-sidecar");
        let mgr = Manager::from_config(
            pg,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(mgr)
            .max_size(cfg.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(10)))
            .create_timeout(Some(Duration::from_secs(10)))
            .build()
            .map_err(|e| StoreError::Pool(e.to_string()))?;
        let store = Store { pool };
        store.migrate(&cfg.schema).await?;
        Ok(store)
    }

    async fn migrate(&self, schema: &str) -> Result<(), StoreError> {
        let mut conn = self.pool.get().await?;
        let lock_key = i64::from_be_bytes(
            Sha256::digest(format!("mcp-oauth-sidecar:{schema}").as_bytes())[..8]
                .try_into()
                .unwrap_or([0; 8]),
        );
        conn.execute("SELECT pg_advisory_lock($1)", &[&lock_key])
            .await?;
        let result = async {
            conn.batch_execute(&format!(
                "CREATE SCHEMA IF NOT EXISTS {schema};
                 CREATE TABLE IF NOT EXISTS schema_migrations (
                     version INT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now());"
            ))
            .await?;
            for (version, sql) in MIGRATIONS {
                let done = conn
                    .query_opt(
                        "SELECT 1 FROM schema_migrations WHERE version = $1",
                        &[version],
                    )
                    .await?
                    .is_some();
                if done {
                    continue;
                }
                let tx = conn.transaction().await?;
                tx.batch_execute(sql).await?;
                tx.execute(
                    "INSERT INTO schema_migrations (version) VALUES ($1)",
                    &[version],
                )
                .await?;
                tx.commit().await?;
                tracing::info!(version, schema, "applied migration");
            }
            Ok::<(), StoreError>(())
        }
        .await;
        conn.execute("SELECT pg_advisory_unlock($1)", &[&lock_key])
            .await?;
        result
    }

    pub(crate) async fn conn(&self) -> Result<deadpool_postgres::Object, StoreError> {
        Ok(self.pool.get().await?)
    }

    /// Deletes what has expired (codes and token families a day after expiry, to keep
    /// reuse detection useful): unfinished sign-ins, sessions, consents, cached
    /// metadata-document clients and registrations never used to obtain a token.
    pub async fn cleanup(&self) -> Result<u64, StoreError> {
        let c = self.conn().await?;
        let mut n = 0;
        n += c
            .execute(
                "DELETE FROM pending_authorizations WHERE expires_at < now()",
                &[],
            )
            .await?;
        n += c
            .execute(
                "DELETE FROM authorization_codes WHERE expires_at < now() - interval '1 day'",
                &[],
            )
            .await?;
        n += c
            .execute("DELETE FROM browser_sessions WHERE expires_at < now()", &[])
            .await?;
        n += c
            .execute("DELETE FROM consents WHERE expires_at < now()", &[])
            .await?;
        n += c
            .execute("DELETE FROM clients WHERE expires_at < now()", &[])
            .await?;
        n += c
            .execute(
                "DELETE FROM token_families WHERE expires_at < now() - interval '1 day'",
                &[],
            )
            .await?;
        Ok(n)
    }

    /// Liveness of the database, for `/readyz`.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.conn().await?.execute("SELECT 1", &[]).await?;
        Ok(())
    }
}
