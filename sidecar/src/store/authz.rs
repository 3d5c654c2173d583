//! Sign-ins in progress, users, consents, browser sessions and authorization codes.

use tokio_postgres::Row;

use super::{Store, StoreError};

/// An authorization request between `/authorize` and the redirect back to the client.
#[derive(Debug, Clone)]
pub struct PendingAuthorization {
    pub id: String,
    pub browser_hash: Vec<u8>,
    pub csrf: String,
    pub client_id: String,
    pub redirect_uri: String,
    pub state: String,
    pub code_challenge: String,
    pub resource: String,
    pub scope: String,
    pub force_consent: bool,
    pub consented: bool,
    pub google_nonce: Option<String>,
    pub google_verifier: Option<String>,
    pub user_sub: Option<String>,
    pub user_email: Option<String>,
    pub user_hd: Option<String>,
    pub user_groups: Option<Vec<String>>,
    pub user_agent: Option<String>,
}

impl PendingAuthorization {
    fn from_row(r: &Row) -> PendingAuthorization {
        PendingAuthorization {
            id: r.get("id"),
            browser_hash: r.get("browser_hash"),
            csrf: r.get("csrf"),
            client_id: r.get("client_id"),
            redirect_uri: r.get("redirect_uri"),
            state: r.get("state"),
            code_challenge: r.get("code_challenge"),
            resource: r.get("resource"),
            scope: r.get("scope"),
            force_consent: r.get("force_consent"),
            consented: r.get("consented"),
            google_nonce: r.get("google_nonce"),
            google_verifier: r.get("google_verifier"),
            user_sub: r.get("user_sub"),
            user_email: r.get("user_email"),
            user_hd: r.get("user_hd"),
            user_groups: r.get("user_groups"),
            user_agent: r.get("user_agent"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct UserRecord {
    pub sub: String,
    pub email: String,
    pub hd: Option<String>,
    pub groups: Vec<String>,
}

/// A stored authorization code.
#[derive(Debug, Clone)]
pub struct CodeRecord {
    pub client_id: String,
    pub redirect_uri: String,
    pub resource: String,
    pub scope: String,
    pub code_challenge: String,
    pub user_sub: String,
    pub email: String,
    pub hd: Option<String>,
    pub groups: Vec<String>,
}

/// What redeeming a code found.
#[derive(Debug)]
pub enum CodeRedemption {
    Fresh(CodeRecord),
    Expired,
    /// Used before; the family it produced, if any, to revoke.
    Reused(Option<String>),
    Unknown,
}

impl Store {
    pub async fn insert_pending(
        &self,
        p: &PendingAuthorization,
        ttl_s: f64,
    ) -> Result<(), StoreError> {
        let c = self.conn().await?;
        c.execute(
            "INSERT INTO pending_authorizations (id, browser_hash, csrf, client_id, redirect_uri,
                 state, code_challenge, resource, scope, force_consent, user_agent, expires_at)
             VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11, now() + make_interval(secs => $12))",
            &[
                &p.id,
                &p.browser_hash,
                &p.csrf,
                &p.client_id,
                &p.redirect_uri,
                &p.state,
                &p.code_challenge,
                &p.resource,
                &p.scope,
                &p.force_consent,
                &p.user_agent,
                &ttl_s,
            ],
        )
        .await?;
        Ok(())
    }

    pub async fn pending(&self, id: &str) -> Result<Option<PendingAuthorization>, StoreError> {
        let c = self.conn().await?;
        let row = c
            .query_opt(
                "SELECT * FROM pending_authorizations WHERE id = $1 AND expires_at > now()",
                &[&id],
            )
            .await?;
        Ok(row.as_ref().map(PendingAuthorization::from_row))
    }

    /// Records the Google leg (our own state, nonce and PKCE verifier).
    pub async fn start_google_leg(
        &self,
        id: &str,
        google_state: &str,
        nonce: &str,
        verifier: &str,
        consented: bool,
    ) -> Result<(), StoreError> {
        let c = self.conn().await?;
        c.execute(
            "UPDATE pending_authorizations
                SET google_state = $2, google_nonce = $3, google_verifier = $4,
                    consented = consented OR $5
              WHERE id = $1",
            &[&id, &google_state, &nonce, &verifier, &consented],
        )
        .await?;
        Ok(())
    }

    /// Consumes the Google `state` (single use) and returns its request.
    pub async fn take_by_google_state(
        &self,
        google_state: &str,
    ) -> Result<Option<PendingAuthorization>, StoreError> {
        let c = self.conn().await?;
        let row = c
            .query_opt(
                "UPDATE pending_authorizations p SET google_state = NULL
                  WHERE google_state = $1 AND expires_at > now()
              RETURNING p.*",
                &[&google_state],
            )
            .await?;
        Ok(row.as_ref().map(PendingAuthorization::from_row))
    }

    /// Remembers who signed in, while the request waits for consent.
    pub async fn set_pending_user(&self, id: &str, user: &UserRecord) -> Result<(), StoreError> {
        let c = self.conn().await?;
        c.execute(
            "UPDATE pending_authorizations
                SET user_sub = $2, user_email = $3, user_hd = $4, user_groups = $5
              WHERE id = $1",
            &[&id, &user.sub, &user.email, &user.hd, &user.groups],
        )
        .await?;
        Ok(())
    }

    pub async fn delete_pending(&self, id: &str) -> Result<bool, StoreError> {
        let c = self.conn().await?;
        Ok(
            c.execute("DELETE FROM pending_authorizations WHERE id = $1", &[&id])
                .await?
                > 0,
        )
    }

    pub async fn upsert_user(&self, u: &UserRecord) -> Result<(), StoreError> {
        let c = self.conn().await?;
        c.execute(
            "INSERT INTO users (sub, email, hd, groups) VALUES ($1,$2,$3,$4)
             ON CONFLICT (sub) DO UPDATE SET email = EXCLUDED.email, hd = EXCLUDED.hd,
                 groups = EXCLUDED.groups, last_login_at = now(), updated_at = now()",
            &[&u.sub, &u.email, &u.hd, &u.groups],
        )
        .await?;
        Ok(())
    }

    pub async fn update_user_groups(&self, sub: &str, groups: &[String]) -> Result<(), StoreError> {
        let c = self.conn().await?;
        c.execute(
            "UPDATE users SET groups = $2, updated_at = now() WHERE sub = $1",
            &[&sub, &groups],
        )
        .await?;
        Ok(())
    }

    pub async fn user(&self, sub: &str) -> Result<Option<UserRecord>, StoreError> {
        let c = self.conn().await?;
        let row = c
            .query_opt(
                "SELECT sub, email, hd, groups FROM users WHERE sub = $1",
                &[&sub],
            )
            .await?;
        Ok(row.map(|r| UserRecord {
            sub: r.get("sub"),
            email: r.get("email"),
            hd: r.get("hd"),
            groups: r.get("groups"),
        }))
    }

    /// Whether `sub` approved `client_id` for `resource` with at least every scope of
    /// `scope` (space-separated), and the approval has not expired.
    pub async fn has_consent(
        &self,
        sub: &str,
        client_id: &str,
        resource: &str,
        scope: &str,
    ) -> Result<bool, StoreError> {
        let scopes: Vec<&str> = scope.split_whitespace().collect();
        let c = self.conn().await?;
        Ok(c.query_opt(
            "SELECT 1 FROM consents WHERE user_sub = $1 AND client_id = $2 AND resource = $3
                 AND $4::text[] <@ scopes AND expires_at > now()",
            &[&sub, &client_id, &resource, &scopes],
        )
        .await?
        .is_some())
    }

    /// Remembers an approval of `scope` for (`sub`, `client_id`, `resource`), added to
    /// the scopes approved before.
    pub async fn grant_consent(
        &self,
        sub: &str,
        client_id: &str,
        resource: &str,
        scope: &str,
        ttl: std::time::Duration,
    ) -> Result<(), StoreError> {
        let scopes: Vec<&str> = scope.split_whitespace().collect();
        // `consent_ttl_days` is whole days, and stays so: a day of the calendar.
        let ttl_days = i32::try_from(ttl.as_secs() / 86_400).unwrap_or(i32::MAX);
        let c = self.conn().await?;
        c.execute(
            "INSERT INTO consents (user_sub, client_id, resource, scopes, expires_at)
             VALUES ($1, $2, $3, $4, now() + make_interval(days => $5))
             ON CONFLICT (user_sub, client_id, resource) DO UPDATE
                 SET scopes = ARRAY(SELECT DISTINCT unnest(consents.scopes || EXCLUDED.scopes)
                                    ORDER BY 1),
                     granted_at = now(), expires_at = EXCLUDED.expires_at",
            &[&sub, &client_id, &resource, &scopes, &ttl_days],
        )
        .await?;
        Ok(())
    }

    pub async fn create_session(
        &self,
        id_hash: &[u8],
        sub: &str,
        ttl_s: f64,
    ) -> Result<(), StoreError> {
        let c = self.conn().await?;
        c.execute(
            "INSERT INTO browser_sessions (id_hash, user_sub, expires_at)
             VALUES ($1, $2, now() + make_interval(secs => $3))
             ON CONFLICT (id_hash) DO UPDATE SET user_sub = EXCLUDED.user_sub,
                 expires_at = EXCLUDED.expires_at",
            &[&id_hash, &sub, &ttl_s],
        )
        .await?;
        Ok(())
    }

    pub async fn session_user(&self, id_hash: &[u8]) -> Result<Option<String>, StoreError> {
        let c = self.conn().await?;
        let row = c
            .query_opt(
                "SELECT user_sub FROM browser_sessions WHERE id_hash = $1 AND expires_at > now()",
                &[&id_hash],
            )
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    pub async fn insert_code(
        &self,
        code_hash: &[u8],
        r: &CodeRecord,
        ttl_s: f64,
    ) -> Result<(), StoreError> {
        let c = self.conn().await?;
        c.execute(
            "INSERT INTO authorization_codes (code_hash, client_id, redirect_uri, resource, scope,
                 code_challenge, user_sub, email, hd, groups, expires_at)
             VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10, now() + make_interval(secs => $11))",
            &[
                &code_hash,
                &r.client_id,
                &r.redirect_uri,
                &r.resource,
                &r.scope,
                &r.code_challenge,
                &r.user_sub,
                &r.email,
                &r.hd,
                &r.groups,
                &ttl_s,
            ],
        )
        .await?;
        Ok(())
    }

    /// Marks a code used, atomically: only the first redemption gets `Fresh`.
    pub async fn redeem_code(&self, code_hash: &[u8]) -> Result<CodeRedemption, StoreError> {
        let c = self.conn().await?;
        let row = c
            .query_opt(
                "UPDATE authorization_codes SET used_at = now()
                  WHERE code_hash = $1 AND used_at IS NULL
              RETURNING *, (expires_at < now()) AS expired",
                &[&code_hash],
            )
            .await?;
        if let Some(r) = row {
            if r.get::<_, bool>("expired") {
                return Ok(CodeRedemption::Expired);
            }
            return Ok(CodeRedemption::Fresh(CodeRecord {
                client_id: r.get("client_id"),
                redirect_uri: r.get("redirect_uri"),
                resource: r.get("resource"),
                scope: r.get("scope"),
                code_challenge: r.get("code_challenge"),
                user_sub: r.get("user_sub"),
                email: r.get("email"),
                hd: r.get("hd"),
                groups: r.get("groups"),
            }));
        }
        let used = c
            .query_opt(
                "SELECT family_id FROM authorization_codes WHERE code_hash = $1",
                &[&code_hash],
            )
            .await?;
        Ok(match used {
            Some(r) => CodeRedemption::Reused(r.get(0)),
            None => CodeRedemption::Unknown,
        })
    }

    pub async fn set_code_family(&self, code_hash: &[u8], family: &str) -> Result<(), StoreError> {
        let c = self.conn().await?;
        c.execute(
            "UPDATE authorization_codes SET family_id = $2 WHERE code_hash = $1",
            &[&code_hash, &family],
        )
        .await?;
        Ok(())
    }
}
