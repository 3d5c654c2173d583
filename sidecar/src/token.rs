//! `POST /token` (authorization_code with PKCE, rotating refresh_token) and
//! `POST /revoke` (RFC 7009).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::{HeaderValue, StatusCode};
use serde::Serialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::app::App;
use crate::audit::{AuthEvent, AuthEventKind};
use crate::clients::register::{now_s, random_string};
use crate::clients::{find_client, ClientError};
use crate::google::directory_user::UserStatus;
use crate::google::GoogleError;
use crate::http::{json, oauth_error, Params, Req, Resp};
use crate::policy::{check_groups, check_identity};
use crate::store::{
    digest, ClientRecord, CodeRecord, CodeRedemption, FamilyRecord, RefreshOutcome, UserRecord,
};

/// Claims of an access token (RFC 9068 shape plus who the person is).
#[derive(Debug, Serialize)]
pub struct AccessClaims<'a> {
    pub iss: &'a str,
    pub sub: &'a str,
    pub aud: &'a str,
    pub exp: u64,
    pub iat: u64,
    pub nbf: u64,
    pub jti: String,
    pub client_id: &'a str,
    pub scope: &'a str,
    pub email: &'a str,
    pub groups: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hd: Option<&'a str>,
}

fn invalid_client(description: &str, basic: bool) -> Resp {
    let mut r = oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", description);
    if basic {
        r.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"mcp-oauth-sidecar\""),
        );
    }
    r
}

fn bad(error: &str, description: &str) -> Resp {
    oauth_error(StatusCode::BAD_REQUEST, error, description)
}

/// Authenticates the client of a token or revocation request.
async fn authenticate(app: &App, req: &Req, f: &Params) -> Result<ClientRecord, Resp> {
    let basic = match req.basic_auth() {
        Ok(b) => b,
        Err(_) => return Err(invalid_client("malformed Basic credentials", true)),
    };
    let (client_id, secret, used_basic) = match &basic {
        Some((id, secret)) => {
            if f.get("client_id").is_some_and(|c| c != id) {
                return Err(invalid_client(
                    "client_id differs from the Basic credentials",
                    true,
                ));
            }
            if f.get("client_secret").is_some() {
                return Err(bad(
                    "invalid_request",
                    "use one client authentication method, not two",
                ));
            }
            (id.clone(), Some(secret.clone()), true)
        }
        None => match f.get("client_id") {
            Some(id) => (
                id.to_string(),
                f.get("client_secret").map(str::to_string),
                false,
            ),
            None => {
                return Err(invalid_client(
                    "client authentication is required (client_id)",
                    false,
                ))
            }
        },
    };
    let client = match find_client(app, &client_id).await {
        Ok(c) => c,
        Err(ClientError::Unknown) => return Err(invalid_client("unknown client", used_basic)),
        Err(ClientError::Metadata(m)) => return Err(invalid_client(&m, used_basic)),
        Err(ClientError::Store(e)) => {
            tracing::error!(error = %e, "client lookup failed");
            return Err(oauth_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "database unavailable",
            ));
        }
    };
    match (&client.secret_hash, secret) {
        (None, _) => Ok(client), // public client; a stray secret proves nothing and is ignored
        (Some(_), None) => Err(invalid_client(
            "this client must authenticate with its client_secret",
            used_basic,
        )),
        (Some(hash), Some(s)) => {
            if bool::from(digest(&s).ct_eq(hash)) {
                Ok(client)
            } else {
                Err(invalid_client("client authentication failed", used_basic))
            }
        }
    }
}

/// `POST /token`.
pub async fn token(app: &App, req: &Req) -> Resp {
    if !req.is_form() {
        return bad(
            "invalid_request",
            "the token request must be application/x-www-form-urlencoded",
        );
    }
    let f = req.form();
    if let Some(d) = &f.duplicated {
        return bad(
            "invalid_request",
            &format!("parameter {d} given more than once"),
        );
    }
    if crate::google_direct::applies(app, req, &f) {
        return crate::google_direct::token(app, req, &f).await;
    }
    let client = match authenticate(app, req, &f).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    match f.get("grant_type") {
        Some("authorization_code") => authorization_code(app, req, &f, &client).await,
        Some("refresh_token") => refresh(app, req, &f, &client).await,
        Some(other) => bad(
            "unsupported_grant_type",
            &format!("grant_type {other:?} is not supported (authorization_code, refresh_token)"),
        ),
        None => bad("invalid_request", "grant_type is required"),
    }
}

fn refused(app: &App, req: &Req, client: &ClientRecord, kind: AuthEventKind, reason: &str) {
    app.audit.record(
        &AuthEvent::new(kind)
            .client_id(client.client_id.clone())
            .client(client.detected_client.clone())
            .reason(reason)
            .from(req.client_ip, req.user_agent()),
    );
}

/// `grant_type=authorization_code`: the code redeemed (once), checked against the
/// request that produced it, then a new token family.
async fn authorization_code(app: &App, req: &Req, f: &Params, client: &ClientRecord) -> Resp {
    let (rec, code_hash) = match redeem(app, req, f, client).await {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    if let Some(refused) = check_code(app, req, f, client, &rec) {
        return refused;
    }
    issue_for_code(app, req, client, &rec, &code_hash).await
}

/// A refused token request: recorded, then `400` with `error` and `error_description`.
fn refuse_grant(
    app: &App,
    req: &Req,
    client: &ClientRecord,
    error: &str,
    description: &str,
) -> Resp {
    refused(app, req, client, AuthEventKind::TokenRefused, description);
    bad(error, description)
}

/// Redeems the code (once); a reused code revokes what it produced.
async fn redeem(
    app: &App,
    req: &Req,
    f: &Params,
    client: &ClientRecord,
) -> Result<(CodeRecord, Vec<u8>), Resp> {
    let fail = |error: &str, description: &str| refuse_grant(app, req, client, error, description);
    let Some(code) = f.get("code") else {
        return Err(fail("invalid_request", "code is required"));
    };
    let code_hash = digest(code);
    let rec = match app.store.redeem_code(&code_hash).await {
        Ok(CodeRedemption::Fresh(r)) => r,
        Ok(CodeRedemption::Unknown) => {
            return Err(fail("invalid_grant", "authorization code is invalid"))
        }
        Ok(CodeRedemption::Expired) => {
            return Err(fail("invalid_grant", "authorization code expired"))
        }
        Ok(CodeRedemption::Reused(family)) => {
            if let Some(fam) = family {
                let _ = app
                    .store
                    .revoke_family(&fam, "authorization code reused")
                    .await;
            }
            return Err(fail(
                "invalid_grant",
                "authorization code was already used; the tokens issued for it have been revoked",
            ));
        }
        Err(e) => {
            tracing::error!(error = %e, "redeeming a code failed");
            return Err(oauth_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "database unavailable",
            ));
        }
    };
    Ok((rec, code_hash))
}

/// The code's client, redirect URI, PKCE verifier and resource checked against the
/// authorization request. `Some`: the refusal.
fn check_code(
    app: &App,
    req: &Req,
    f: &Params,
    client: &ClientRecord,
    rec: &CodeRecord,
) -> Option<Resp> {
    let fail = |error: &str, description: &str| refuse_grant(app, req, client, error, description);
    if rec.client_id != client.client_id {
        return Some(fail(
            "invalid_grant",
            "authorization code was issued to another client",
        ));
    }
    match f.get("redirect_uri") {
        None => return Some(fail("invalid_request", "redirect_uri is required")),
        Some(r) if r != rec.redirect_uri => {
            return Some(fail(
                "invalid_grant",
                "redirect_uri does not match the authorization request",
            ))
        }
        Some(_) => {}
    }
    let Some(verifier) = f.get("code_verifier") else {
        return Some(fail("invalid_request", "code_verifier is required (PKCE)"));
    };
    let well_formed = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
    let computed = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    if !well_formed || !bool::from(computed.as_bytes().ct_eq(rec.code_challenge.as_bytes())) {
        return Some(fail(
            "invalid_grant",
            "code_verifier does not match the code_challenge",
        ));
    }
    if let Some(r) = f.get("resource") {
        match app.cfg.find_resource(r) {
            Some(res) if res.url == rec.resource => {}
            Some(_) => {
                return Some(fail(
                    "invalid_target",
                    "resource does not match the authorization request",
                ))
            }
            None => {
                return Some(fail(
                    "invalid_target",
                    &format!("resource {r:?} is not a protected resource of this server"),
                ))
            }
        }
    }
    None
}

/// Creates the token family and answers with the tokens.
async fn issue_for_code(
    app: &App,
    req: &Req,
    client: &ClientRecord,
    rec: &CodeRecord,
    code_hash: &[u8],
) -> Resp {
    let family = random_string(18);
    let refresh_token = random_string(32);
    if let Err(e) = app
        .store
        .create_family(
            &family,
            &client.client_id,
            &rec.user_sub,
            &rec.email,
            &rec.resource,
            &rec.scope,
            app.cfg.tokens.refresh_token_ttl.as_secs_f64(),
            &digest(&refresh_token),
        )
        .await
    {
        tracing::error!(error = %e, "storing a refresh token failed");
        return oauth_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "database unavailable",
        );
    }
    let _ = app.store.set_code_family(code_hash, &family).await;
    let resp = issue(
        app,
        client,
        &rec.user_sub,
        &rec.email,
        rec.hd.as_deref(),
        &rec.groups,
        &rec.resource,
        &rec.scope,
        &refresh_token,
    );
    app.audit.record(
        &AuthEvent::new(AuthEventKind::TokenIssued)
            .client_id(client.client_id.clone())
            .client(client.detected_client.clone())
            .user(&rec.user_sub, &rec.email)
            .groups(&rec.groups)
            .resource(rec.resource.clone())
            .from(req.client_ip, req.user_agent()),
    );
    resp
}

/// `grant_type=refresh_token`: the family checked, the person checked again, the
/// token rotated (a reuse revokes the family), then new tokens.
async fn refresh(app: &App, req: &Req, f: &Params, client: &ClientRecord) -> Resp {
    let (family, old_hash, scope) = match live_family(app, req, f, client).await {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    let (user, groups) = match recheck_person(app, req, client, &family).await {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    let new_token = random_string(32);
    match app
        .store
        .rotate_refresh(&family.family_id, &old_hash, &digest(&new_token))
        .await
    {
        Ok(true) => {}
        Ok(false) => return reuse(app, req, client, &family.family_id).await,
        Err(e) => {
            tracing::error!(error = %e, "rotating a refresh token failed");
            return oauth_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "database unavailable",
            );
        }
    }
    let resp = issue(
        app,
        client,
        &user.sub,
        &user.email,
        user.hd.as_deref(),
        &groups,
        &family.resource,
        &scope,
        &new_token,
    );
    app.audit.record(
        &AuthEvent::new(AuthEventKind::TokenRefreshed)
            .client_id(client.client_id.clone())
            .client(client.detected_client.clone())
            .user(&user.sub, &user.email)
            .groups(&groups)
            .resource(family.resource.clone())
            .from(req.client_ip, req.user_agent()),
    );
    resp
}

/// The refresh token's family, live and this client's, and the scope asked for (at
/// most what was granted); a token already rotated is a reuse.
async fn live_family(
    app: &App,
    req: &Req,
    f: &Params,
    client: &ClientRecord,
) -> Result<(FamilyRecord, Vec<u8>, String), Resp> {
    let fail = |error: &str, description: &str| refuse_grant(app, req, client, error, description);
    let Some(token) = f.get("refresh_token") else {
        return Err(fail("invalid_request", "refresh_token is required"));
    };
    let old_hash = digest(token);
    let family = match app.store.find_refresh(&old_hash).await {
        Ok(RefreshOutcome::Unknown) => {
            return Err(fail("invalid_grant", "refresh token is invalid"))
        }
        Ok(RefreshOutcome::Found { used: true, family }) => {
            return Err(reuse(app, req, client, &family.family_id).await);
        }
        Ok(RefreshOutcome::Found {
            used: false,
            family,
        }) => family,
        Err(e) => {
            tracing::error!(error = %e, "reading a refresh token failed");
            return Err(oauth_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "database unavailable",
            ));
        }
    };
    if family.client_id != client.client_id {
        return Err(fail(
            "invalid_grant",
            "refresh token was issued to another client",
        ));
    }
    if family.revoked {
        return Err(fail(
            "invalid_grant",
            "refresh token was revoked; sign in again",
        ));
    }
    if family.expired {
        return Err(fail(
            "invalid_grant",
            "refresh token expired; sign in again",
        ));
    }
    if let Some(r) = f.get("resource") {
        match app.cfg.find_resource(r) {
            Some(res) if res.url == family.resource => {}
            _ => {
                return Err(fail(
                    "invalid_target",
                    "resource does not match the one this refresh token is for",
                ))
            }
        }
    }
    let scope = match f.get("scope") {
        None => family.scope.clone(),
        Some(s) => {
            let held: Vec<&str> = family.scope.split_whitespace().collect();
            if s.split_whitespace().any(|x| !held.contains(&x)) {
                return Err(fail("invalid_scope", "scope exceeds what was granted"));
            }
            s.to_string()
        }
    };
    Ok((family, old_hash, scope))
}

/// The person is checked again: domain still allowed, still in the directory, groups
/// as they are now. A refusal revokes the family.
async fn recheck_person(
    app: &App,
    req: &Req,
    client: &ClientRecord,
    family: &FamilyRecord,
) -> Result<(UserRecord, Vec<String>), Resp> {
    let fail = |error: &str, description: &str| refuse_grant(app, req, client, error, description);
    let user = match app.store.user(&family.user_sub).await {
        Ok(Some(u)) => u,
        Ok(None) => {
            return Err(fail(
                "invalid_grant",
                "the user of this refresh token is unknown",
            ))
        }
        Err(e) => {
            tracing::error!(error = %e, "reading a user failed");
            return Err(oauth_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "database unavailable",
            ));
        }
    };
    if let Err(r) = check_identity(&app.cfg.google, &user.email, true, user.hd.as_deref()) {
        let _ = app.store.revoke_family(&family.family_id, r.code).await;
        return Err(fail("invalid_grant", &r.message));
    }
    if let Some(refused) = offboarded(app, &user.email, &family.family_id, &fail).await {
        return Err(refused);
    }
    let groups = match app.google.groups(&user.email).await {
        Ok(g) => g,
        Err(GoogleError::UserNotFound) => {
            let _ = app
                .store
                .revoke_family(&family.family_id, "not_in_directory")
                .await;
            return Err(fail(
                "invalid_grant",
                &format!("{} is no longer in the company directory", user.email),
            ));
        }
        Err(e) => {
            tracing::error!(error = %e, "reading groups at refresh failed");
            return Err(oauth_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "the company directory is unavailable; retry later",
            ));
        }
    };
    if let Err(r) = check_groups(&app.cfg.google, &user.email, &groups) {
        let _ = app.store.revoke_family(&family.family_id, r.code).await;
        return Err(fail("invalid_grant", &r.message));
    }
    if groups != user.groups {
        let _ = app.store.update_user_groups(&user.sub, &groups).await;
    }
    Ok((user, groups))
}

/// Offboarding: with Directory credentials, a suspended, archived or deleted person
/// (`users.get`) gets `invalid_grant` and the whole family is revoked. `None`: the
/// refresh goes on.
async fn offboarded(
    app: &App,
    email: &str,
    family_id: &str,
    fail: &impl Fn(&str, &str) -> Resp,
) -> Option<Resp> {
    let (code, message) = match app.google.user_status(email).await {
        Ok(None | Some(UserStatus::Active)) => return None,
        Ok(Some(s)) => (
            s.code(),
            format!(
                "{email} is {} in the company directory; every token of this sign-in has been revoked",
                if s == UserStatus::Suspended { "suspended" } else { "archived" }
            ),
        ),
        Err(GoogleError::UserNotFound) => (
            "not_in_directory",
            format!("{email} is no longer in the company directory"),
        ),
        Err(e) => {
            tracing::error!(error = %e, "reading the user at refresh failed");
            return Some(oauth_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "the company directory is unavailable; retry later",
            ));
        }
    };
    let _ = app.store.revoke_family(family_id, code).await;
    Some(fail("invalid_grant", &message))
}

/// A rotated refresh token came back: revoke the whole family.
async fn reuse(app: &App, req: &Req, client: &ClientRecord, family_id: &str) -> Resp {
    let _ = app
        .store
        .revoke_family(family_id, "refresh token reused")
        .await;
    app.audit.record(
        &AuthEvent::new(AuthEventKind::RefreshReuseDetected)
            .client_id(client.client_id.clone())
            .reason(format!("family {family_id} revoked"))
            .from(req.client_ip, req.user_agent()),
    );
    bad(
        "invalid_grant",
        "refresh token was already used; every token of this sign-in has been revoked",
    )
}

#[allow(clippy::too_many_arguments)]
fn issue(
    app: &App,
    client: &ClientRecord,
    sub: &str,
    email: &str,
    hd: Option<&str>,
    groups: &[String],
    resource: &str,
    scope: &str,
    refresh_token: &str,
) -> Resp {
    let now = now_s();
    let ttl = app.cfg.tokens.access_token_ttl.as_secs();
    let claims = AccessClaims {
        iss: app.cfg.issuer.as_str(),
        sub,
        aud: resource,
        exp: now + ttl,
        iat: now,
        nbf: now,
        jti: random_string(16),
        client_id: &client.client_id,
        scope,
        email,
        groups,
        hd,
    };
    let signed = app
        .keys
        .signer()
        .ok_or_else(|| "no signing key".to_string())
        .and_then(|s| s.sign(&claims).map_err(|e| e.to_string()));
    let access_token = match signed {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "signing an access token failed");
            return oauth_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "signing failed",
            );
        }
    };
    let mut r = json(
        StatusCode::OK,
        &json!({
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": ttl,
            "refresh_token": refresh_token,
            "scope": scope,
        }),
    );
    r.headers_mut()
        .insert(http::header::PRAGMA, HeaderValue::from_static("no-cache"));
    r
}

/// `POST /revoke` (RFC 7009): revokes a refresh token's whole family. Unknown tokens,
/// and access tokens (short-lived JWTs), get 200 as the RFC asks.
pub async fn revoke(app: &App, req: &Req) -> Resp {
    if !req.is_form() {
        return bad(
            "invalid_request",
            "the revocation request must be application/x-www-form-urlencoded",
        );
    }
    let f = req.form();
    let client = match authenticate(app, req, &f).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let Some(token) = f.get("token") else {
        return bad("invalid_request", "token is required");
    };
    if let Ok(RefreshOutcome::Found { family, .. }) = app.store.find_refresh(&digest(token)).await {
        if family.client_id == client.client_id
            && app
                .store
                .revoke_family(&family.family_id, "revoked by the client")
                .await
                .unwrap_or(false)
        {
            app.audit.record(
                &AuthEvent::new(AuthEventKind::TokenRevoked)
                    .client_id(client.client_id.clone())
                    .user(&family.user_sub, &family.email)
                    .from(req.client_ip, req.user_agent()),
            );
        }
    }
    json(StatusCode::OK, &json!({}))
}
