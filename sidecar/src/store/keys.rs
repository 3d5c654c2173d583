//! Signing keys: the current one and those retired recently enough that tokens they
//! signed may still be alive.

use serde_json::Value;

use super::{Store, StoreError};

#[derive(Debug, Clone)]
pub struct KeyRecord {
    pub kid: String,
    pub private_pem: Option<String>,
    pub public_jwk: Value,
    pub source: String,
    pub retired: bool,
}

const KEY_LOCK: i64 = 0x6d63_705f_6b65_7973; // "mcp_keys"

impl Store {
    /// Keys to publish: live ones, and those retired less than `grace_s` ago.
    pub async fn published_keys(&self, grace_s: f64) -> Result<Vec<KeyRecord>, StoreError> {
        let c = self.conn().await?;
        let rows = c
            .query(
                "SELECT kid, private_pem, public_jwk, source, retired_at IS NOT NULL AS retired
                   FROM signing_keys
                  WHERE retired_at IS NULL OR retired_at > now() - make_interval(secs => $1)
                  ORDER BY created_at DESC",
                &[&grace_s],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| KeyRecord {
                kid: r.get("kid"),
                private_pem: r.get("private_pem"),
                public_jwk: r.get("public_jwk"),
                source: r.get("source"),
                retired: r.get("retired"),
            })
            .collect())
    }

    /// Makes `kid` (a configured key, whose private half is never stored) the current
    /// key, retiring every other.
    pub async fn adopt_configured_key(&self, kid: &str, jwk: &Value) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&KEY_LOCK])
            .await?;
        tx.execute(
            "INSERT INTO signing_keys (kid, private_pem, public_jwk, source) VALUES ($1, NULL, $2, 'config')
             ON CONFLICT (kid) DO UPDATE SET retired_at = NULL",
            &[&kid, &jwk],
        )
        .await?;
        tx.execute(
            "UPDATE signing_keys SET retired_at = now() WHERE kid <> $1 AND retired_at IS NULL",
            &[&kid],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The current generated key, creating one with `make` if there is none (or when
    /// `rotate`). Serialised between replicas.
    pub async fn current_generated_key(
        &self,
        rotate: bool,
        make: impl FnOnce() -> Result<(String, String, Value), String>,
    ) -> Result<KeyRecord, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&KEY_LOCK])
            .await?;
        if !rotate {
            let row = tx
                .query_opt(
                    "SELECT kid, private_pem, public_jwk, source FROM signing_keys
                      WHERE retired_at IS NULL AND private_pem IS NOT NULL
                      ORDER BY created_at DESC LIMIT 1",
                    &[],
                )
                .await?;
            if let Some(r) = row {
                tx.commit().await?;
                return Ok(KeyRecord {
                    kid: r.get("kid"),
                    private_pem: r.get("private_pem"),
                    public_jwk: r.get("public_jwk"),
                    source: r.get("source"),
                    retired: false,
                });
            }
        }
        let (kid, pem, jwk) = make().map_err(StoreError::Config)?;
        tx.execute(
            "UPDATE signing_keys SET retired_at = now() WHERE retired_at IS NULL",
            &[],
        )
        .await?;
        tx.execute(
            "INSERT INTO signing_keys (kid, private_pem, public_jwk, source) VALUES ($1, $2, $3, 'generated')",
            &[&kid, &pem, &jwk],
        )
        .await?;
        tx.commit().await?;
        Ok(KeyRecord {
            kid,
            private_pem: Some(pem),
            public_jwk: jwk,
            source: "generated".into(),
            retired: false,
        })
    }
}
