//! Refresh-token families: one family per sign-in, one live token per family, every
//! rotation recorded so that a reused token is recognised and its family revoked.

use tokio_postgres::Row;

use super::{Store, StoreError};

#[derive(Debug, Clone)]
pub struct FamilyRecord {
    pub family_id: String,
    pub client_id: String,
    pub user_sub: String,
    pub email: String,
    pub resource: String,
    pub scope: String,
    pub revoked: bool,
    pub expired: bool,
}

impl FamilyRecord {
    fn from_row(r: &Row) -> FamilyRecord {
        FamilyRecord {
            family_id: r.get("family_id"),
            client_id: r.get("client_id"),
            user_sub: r.get("user_sub"),
            email: r.get("email"),
            resource: r.get("resource"),
            scope: r.get("scope"),
            revoked: r
                .get::<_, Option<std::time::SystemTime>>("revoked_at")
                .is_some(),
            expired: r.get("expired"),
        }
    }
}

/// What a presented refresh token is.
#[derive(Debug)]
pub enum RefreshOutcome {
    Unknown,
    /// `used`: the token was already rotated (a reuse).
    Found {
        used: bool,
        family: FamilyRecord,
    },
}

impl Store {
    /// Starts a family with its first refresh token.
    #[allow(clippy::too_many_arguments)]
    pub async fn create_family(
        &self,
        family_id: &str,
        client_id: &str,
        user_sub: &str,
        email: &str,
        resource: &str,
        scope: &str,
        ttl_s: f64,
        first_token_hash: &[u8],
    ) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        tx.execute(
            "INSERT INTO token_families (family_id, client_id, user_sub, email, resource, scope, expires_at)
             VALUES ($1,$2,$3,$4,$5,$6, now() + make_interval(secs => $7))",
            &[&family_id, &client_id, &user_sub, &email, &resource, &scope, &ttl_s],
        )
        .await?;
        tx.execute(
            "INSERT INTO refresh_tokens (token_hash, family_id) VALUES ($1, $2)",
            &[&first_token_hash, &family_id],
        )
        .await?;
        // A registration that has obtained a token no longer expires as unused.
        tx.execute(
            "UPDATE clients SET expires_at = NULL
              WHERE client_id = $1 AND kind = 'dcr' AND expires_at IS NOT NULL",
            &[&client_id],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn find_refresh(&self, token_hash: &[u8]) -> Result<RefreshOutcome, StoreError> {
        let c = self.conn().await?;
        let row = c
            .query_opt(
                "SELECT rt.used_at IS NOT NULL AS used, f.*, (f.expires_at < now()) AS expired
                   FROM refresh_tokens rt JOIN token_families f USING (family_id)
                  WHERE rt.token_hash = $1",
                &[&token_hash],
            )
            .await?;
        Ok(match row {
            None => RefreshOutcome::Unknown,
            Some(r) => RefreshOutcome::Found {
                used: r.get("used"),
                family: FamilyRecord::from_row(&r),
            },
        })
    }

    /// Replaces `old` by `new` in its family. `false` when `old` was used meanwhile or
    /// the family was revoked (the caller treats that as a reuse).
    pub async fn rotate_refresh(
        &self,
        family_id: &str,
        old_hash: &[u8],
        new_hash: &[u8],
    ) -> Result<bool, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let live = tx
            .query_opt(
                "SELECT 1 FROM token_families WHERE family_id = $1 AND revoked_at IS NULL FOR UPDATE",
                &[&family_id],
            )
            .await?
            .is_some();
        if !live {
            return Ok(false);
        }
        let claimed = tx
            .execute(
                "UPDATE refresh_tokens SET used_at = now()
                  WHERE token_hash = $1 AND family_id = $2 AND used_at IS NULL",
                &[&old_hash, &family_id],
            )
            .await?;
        if claimed != 1 {
            return Ok(false);
        }
        tx.execute(
            "INSERT INTO refresh_tokens (token_hash, family_id) VALUES ($1, $2)",
            &[&new_hash, &family_id],
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Revokes a family; `true` when it was live.
    pub async fn revoke_family(&self, family_id: &str, reason: &str) -> Result<bool, StoreError> {
        let c = self.conn().await?;
        Ok(c.execute(
            "UPDATE token_families SET revoked_at = now(), revoked_reason = $2
                  WHERE family_id = $1 AND revoked_at IS NULL",
            &[&family_id, &reason],
        )
        .await?
            > 0)
    }

    /// Why a family was revoked, if it was.
    pub async fn family_revocation(&self, family_id: &str) -> Result<Option<String>, StoreError> {
        let c = self.conn().await?;
        let row = c
            .query_opt(
                "SELECT revoked_reason FROM token_families WHERE family_id = $1 AND revoked_at IS NOT NULL",
                &[&family_id],
            )
            .await?;
        Ok(row.map(|r| r.get::<_, Option<String>>(0).unwrap_or_default()))
    }
}
