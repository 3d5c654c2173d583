//! Registered clients (DCR) and cached Client ID Metadata Documents.

use std::time::SystemTime;

use serde_json::Value;
use tokio_postgres::Row;

use super::{Store, StoreError};

#[derive(Debug, Clone)]
pub struct ClientRecord {
    pub client_id: String,
    /// `dcr` or `cimd`.
    pub kind: String,
    pub secret_hash: Option<Vec<u8>>,
    pub client_name: Option<String>,
    pub redirect_uris: Vec<String>,
    pub application_type: String,
    pub token_endpoint_auth_method: String,
    pub metadata: Value,
    pub detected_client: String,
    pub user_agent: Option<String>,
    pub source_ip: Option<String>,
    pub created_at: SystemTime,
    /// `cimd`: the cached document is trusted until then. `dcr`: a registration never
    /// used to obtain a token is deleted then (`None` once it has been used).
    pub expires_at: Option<SystemTime>,
}

impl ClientRecord {
    fn from_row(r: &Row) -> ClientRecord {
        ClientRecord {
            client_id: r.get("client_id"),
            kind: r.get("kind"),
            secret_hash: r.get("secret_hash"),
            client_name: r.get("client_name"),
            redirect_uris: r.get("redirect_uris"),
            application_type: r.get("application_type"),
            token_endpoint_auth_method: r.get("token_endpoint_auth_method"),
            metadata: r.get("metadata"),
            detected_client: r.get("detected_client"),
            user_agent: r.get("user_agent"),
            source_ip: r.get("source_ip"),
            created_at: r.get("created_at"),
            expires_at: r.get("expires_at"),
        }
    }
}

impl Store {
    pub async fn client(&self, client_id: &str) -> Result<Option<ClientRecord>, StoreError> {
        let c = self.conn().await?;
        let row = c
            .query_opt("SELECT * FROM clients WHERE client_id = $1", &[&client_id])
            .await?;
        Ok(row.as_ref().map(ClientRecord::from_row))
    }

    /// Inserts a client, or replaces it (CIMD documents are refreshed in place).
    pub async fn put_client(&self, c: &ClientRecord) -> Result<(), StoreError> {
        let conn = self.conn().await?;
        conn.execute(
            "INSERT INTO clients (client_id, kind, secret_hash, client_name, redirect_uris,
                 application_type, token_endpoint_auth_method, metadata, detected_client,
                 user_agent, source_ip, created_at, expires_at)
             VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13)
             ON CONFLICT (client_id) DO UPDATE SET
                 kind = EXCLUDED.kind, secret_hash = EXCLUDED.secret_hash,
                 client_name = EXCLUDED.client_name, redirect_uris = EXCLUDED.redirect_uris,
                 application_type = EXCLUDED.application_type,
                 token_endpoint_auth_method = EXCLUDED.token_endpoint_auth_method,
                 metadata = EXCLUDED.metadata, detected_client = EXCLUDED.detected_client,
                 expires_at = EXCLUDED.expires_at",
            &[
                &c.client_id,
                &c.kind,
                &c.secret_hash,
                &c.client_name,
                &c.redirect_uris,
                &c.application_type,
                &c.token_endpoint_auth_method,
                &c.metadata,
                &c.detected_client,
                &c.user_agent,
                &c.source_ip,
                &c.created_at,
                &c.expires_at,
            ],
        )
        .await?;
        Ok(())
    }
}
