//! `GET /authorize` and `POST /consent`: validate the client's request, show the
//! consent page the first time a person meets a client for a resource and scopes, then
//! send the browser to Google with our own state, nonce and PKCE.
//!
//! Until the client and its redirect URI are known good, errors are shown as a page
//! (never redirected: RFC 6749 §4.1.2.1); after that they go back to the client with
//! `error`, `state` and `iss` (RFC 9207).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::StatusCode;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use url::Url;

use crate::app::App;
use crate::audit::{AuthEvent, AuthEventKind};
use crate::clients::register::random_string;
use crate::clients::{
    check_redirect_uri, find_client, is_loopback_client, redirect_matches, ClientError,
};
use crate::http::{html, redirect, set_cookie, Params, Req, Resp};
use crate::pages;
use crate::store::{digest, ClientRecord, CodeRecord, PendingAuthorization, UserRecord};

/// Cookie base names; see [`App::cookie_name`] for the names actually used.
pub const BROWSER_COOKIE: &str = "mcp_oauth_browser";
pub const SESSION_COOKIE: &str = "mcp_oauth_session";

/// A page for a request that cannot be sent back to the client.
pub fn error_page(status: StatusCode, title: &str, message: &str) -> Resp {
    html(status, pages::error(title, message))
}

/// `redirect_uri` with `params` plus `iss` appended (existing query kept).
pub fn client_redirect_url(app: &App, redirect_uri: &str, params: &[(&str, &str)]) -> String {
    match Url::parse(redirect_uri) {
        Ok(mut u) => {
            {
                let mut q = u.query_pairs_mut();
                for (k, v) in params {
                    q.append_pair(k, v);
                }
                q.append_pair("iss", app.cfg.issuer.as_str());
            }
            u.into()
        }
        Err(_) => redirect_uri.to_string(),
    }
}

/// Sends an OAuth error back to the client.
pub fn error_to_client(
    app: &App,
    redirect_uri: &str,
    state: Option<&str>,
    error: &str,
    description: &str,
) -> Resp {
    let mut params = vec![("error", error), ("error_description", description)];
    if let Some(s) = state {
        params.push(("state", s));
    }
    redirect(&client_redirect_url(app, redirect_uri, &params))
}

/// Whether `code_challenge` is a base64url SHA-256 (RFC 7636 §4.2 with S256).
fn valid_challenge(c: &str) -> bool {
    c.len() == 43
        && c.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The scope granted: requested ∩ supported, or the default scope.
pub fn grant_scope(app: &App, requested: Option<&str>) -> String {
    let supported = &app.cfg.authorization.scopes_supported;
    let mut granted: Vec<&str> = Vec::new();
    for s in requested.unwrap_or("").split_whitespace() {
        if supported.iter().any(|x| x == s) && !granted.contains(&s) {
            granted.push(s);
        }
    }
    if !granted.iter().any(|s| *s != "offline_access") {
        granted.insert(0, &app.cfg.authorization.default_scope);
    }
    granted.join(" ")
}

fn browser_id(app: &App, req: &Req) -> (String, bool) {
    match req.cookie(&app.cookie_name(BROWSER_COOKIE)) {
        Some(v) if v.len() >= 32 && v.len() <= 64 => (v, false),
        _ => (random_string(24), true),
    }
}

fn host_of(uri: &str) -> String {
    Url::parse(uri)
        .ok()
        .and_then(|u| {
            u.host_str().map(|h| match u.port() {
                Some(p) => format!("{h}:{p}"),
                None => h.to_string(),
            })
        })
        .unwrap_or_else(|| uri.to_string())
}

/// The consent page for `p`.
pub fn consent_page(app: &App, client: &ClientRecord, p: &PendingAuthorization) -> String {
    let resource_name = app
        .cfg
        .find_resource(&p.resource)
        .map(|r| r.name.clone())
        .unwrap_or_else(|| p.resource.clone());
    let metadata_host = (client.kind == "cimd").then(|| host_of(&client.client_id));
    pages::consent(&pages::Consent {
        client_name: client
            .client_name
            .as_deref()
            .unwrap_or("An unnamed application"),
        client_id: &client.client_id,
        redirect_host: &host_of(&p.redirect_uri),
        loopback_only: is_loopback_client(client),
        metadata_host: metadata_host.as_deref(),
        resource_name: &resource_name,
        resource_url: &p.resource,
        scope: &p.scope,
        signed_in_as: p.user_email.as_deref(),
        request_id: &p.id,
        csrf: &p.csrf,
        action: &app.url("/consent"),
    })
}

/// `GET /authorize`.
pub async fn authorize(app: &App, req: &Req) -> Resp {
    let q = req.query();
    let (client, client_id, redirect_uri) = match check_client(app, req, &q).await {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    let checked = match check_request(app, req, &q, client_id, redirect_uri) {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    begin(app, req, &q, &client, redirect_uri, checked).await
}

/// Records an `AuthorizationRefused` event.
fn refused(app: &App, req: &Req, reason: String, client_id: Option<&str>) {
    let mut e = AuthEvent::new(AuthEventKind::AuthorizationRefused)
        .reason(reason)
        .from(req.client_ip, req.user_agent());
    if let Some(c) = client_id {
        e = e.client_id(c);
    }
    app.audit.record(&e);
}

/// The client and its redirect URI, checked; until both are known good, an error is a
/// page shown to the person (never a redirect).
async fn check_client<'q>(
    app: &App,
    req: &Req,
    q: &'q Params,
) -> Result<(ClientRecord, &'q str, &'q str), Resp> {
    let refused = |reason: String, client_id: Option<&str>| refused(app, req, reason, client_id);
    if let Some(d) = &q.duplicated {
        refused(format!("parameter {d} repeated"), None);
        return Err(error_page(
            StatusCode::BAD_REQUEST,
            "Invalid request",
            &format!("The parameter {d} was given more than once."),
        ));
    }
    let Some(client_id) = q.get("client_id") else {
        refused("no client_id".into(), None);
        return Err(error_page(
            StatusCode::BAD_REQUEST,
            "Invalid request",
            "The request names no application (client_id is missing).",
        ));
    };
    let client = match find_client(app, client_id).await {
        Ok(c) => c,
        Err(ClientError::Unknown) => {
            refused("unknown client".into(), Some(client_id));
            return Err(error_page(
                StatusCode::BAD_REQUEST,
                "Unknown application",
                "invalid_client: this application is not registered here (unknown client_id). It may have been registered with another server; let it register again.",
            ));
        }
        Err(ClientError::Metadata(m)) => {
            refused(format!("client metadata: {m}"), Some(client_id));
            return Err(error_page(
                StatusCode::BAD_REQUEST,
                "Unusable application metadata",
                &format!("invalid_client: {m}"),
            ));
        }
        Err(ClientError::Store(e)) => {
            tracing::error!(error = %e, "client lookup failed");
            return Err(error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Temporarily unavailable",
                "The sign-in service cannot reach its database. Try again in a minute.",
            ));
        }
    };
    let Some(redirect_uri) = q.get("redirect_uri") else {
        refused("no redirect_uri".into(), Some(client_id));
        return Err(error_page(
            StatusCode::BAD_REQUEST,
            "Invalid request",
            "invalid_request: redirect_uri is required.",
        ));
    };
    if !redirect_matches(&client.redirect_uris, redirect_uri) {
        refused(
            format!("redirect_uri {redirect_uri} not registered"),
            Some(client_id),
        );
        return Err(error_page(
            StatusCode::BAD_REQUEST,
            "Invalid redirect URI",
            &format!(
                "invalid_request: redirect_uri {redirect_uri:?} is not registered for this application, so the sign-in cannot continue."
            ),
        ));
    }
    // The allowlist may have shrunk since the client registered: check again, with the
    // error registration would give.
    if let Err(e) = check_redirect_uri(redirect_uri, &app.cfg.clients.allowed_redirect_uris) {
        refused(
            format!("redirect_uri {redirect_uri} no longer allowed"),
            Some(client_id),
        );
        return Err(error_page(
            StatusCode::BAD_REQUEST,
            "Redirect URI no longer allowed",
            &format!("invalid_redirect_uri: {e}"),
        ));
    }
    Ok((client, client_id, redirect_uri))
}

/// What the rest of the request says, checked.
struct Checked<'q> {
    state: &'q str,
    challenge: &'q str,
    resource: String,
    prompt: &'q str,
}

/// Checks response type, state, PKCE, resource and prompt; from here on an error is a
/// redirect to the client with `error`, `state` and `iss`.
// The Err is the finished answer, built once per refused request: not worth a Box.
#[allow(clippy::result_large_err)]
fn check_request<'q>(
    app: &App,
    req: &Req,
    q: &'q Params,
    client_id: &str,
    redirect_uri: &str,
) -> Result<Checked<'q>, Resp> {
    let refused = |reason: String, client_id: Option<&str>| refused(app, req, reason, client_id);
    let state = q.get("state");
    let to_client = |error: &str, description: &str| {
        refused(format!("{error}: {description}"), Some(client_id));
        error_to_client(app, redirect_uri, state, error, description)
    };
    if q.get("response_type") != Some("code") {
        return Err(to_client(
            "unsupported_response_type",
            "response_type must be \"code\"",
        ));
    }
    let Some(state) = state else {
        return Err(to_client("invalid_request", "state is required"));
    };
    let Some(challenge) = q.get("code_challenge") else {
        return Err(to_client(
            "invalid_request",
            "code_challenge is required (PKCE with code_challenge_method S256)",
        ));
    };
    if q.get("code_challenge_method") != Some("S256") {
        return Err(to_client(
            "invalid_request",
            "code_challenge_method must be S256",
        ));
    }
    if !valid_challenge(challenge) {
        return Err(to_client(
            "invalid_request",
            "code_challenge must be the base64url SHA-256 of the code_verifier (43 characters)",
        ));
    }
    let resource = match q.get("resource") {
        Some(r) => match app.cfg.find_resource(r) {
            Some(res) => res.url.to_string(),
            None => {
                return Err(to_client(
                    "invalid_target",
                    &format!("resource {r:?} is not a protected resource of this server"),
                ))
            }
        },
        None if !app.cfg.authorization.require_resource && app.cfg.resources.len() == 1 => {
            app.cfg.resources[0].url.to_string()
        }
        None => {
            return Err(to_client(
                "invalid_target",
                "resource is required (RFC 8707): the URL of the MCP server",
            ))
        }
    };
    let prompt = q.get("prompt").unwrap_or("");
    if prompt.split_whitespace().any(|p| p == "none") {
        return Err(to_client(
            "login_required",
            "signing in requires interaction with Google",
        ));
    }
    Ok(Checked {
        state,
        challenge,
        resource,
        prompt,
    })
}

/// Stores the pending authorization, then shows the consent page or, for a person who
/// approved this client before (known from this browser's session), goes straight to
/// Google.
async fn begin(
    app: &App,
    req: &Req,
    q: &Params,
    client: &ClientRecord,
    redirect_uri: &str,
    c: Checked<'_>,
) -> Resp {
    let Checked {
        state,
        challenge,
        resource,
        prompt,
    } = c;
    let (browser, new_browser) = browser_id(app, req);
    let pending = PendingAuthorization {
        id: random_string(24),
        browser_hash: digest(&browser),
        csrf: random_string(24),
        client_id: client.client_id.clone(),
        redirect_uri: redirect_uri.to_string(),
        state: state.to_string(),
        code_challenge: challenge.to_string(),
        resource,
        scope: grant_scope(app, q.get("scope")),
        force_consent: prompt.split_whitespace().any(|p| p == "consent"),
        consented: false,
        google_nonce: None,
        google_verifier: None,
        user_sub: None,
        user_email: None,
        user_hd: None,
        user_groups: None,
        user_agent: Some(req.user_agent().chars().take(512).collect()),
    };
    let ttl = app.cfg.authorization.pending_ttl.as_secs_f64();
    if let Err(e) = app.store.insert_pending(&pending, ttl).await {
        tracing::error!(error = %e, "storing an authorization request failed");
        return error_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Temporarily unavailable",
            "The sign-in service cannot reach its database. Try again in a minute.",
        );
    }
    // A person who approved this client before (known from this browser's session)
    // goes straight to Google; the approval is checked again for whoever signs in.
    let remembered = match req.cookie(&app.cookie_name(SESSION_COOKIE)) {
        Some(s) if !pending.force_consent => match app.store.session_user(&digest(&s)).await {
            Ok(Some(sub)) => app
                .store
                .has_consent(&sub, &client.client_id, &pending.resource, &pending.scope)
                .await
                .unwrap_or(false),
            _ => false,
        },
        _ => false,
    };
    let mut resp = if remembered {
        to_google(app, &pending, false).await
    } else {
        html(StatusCode::OK, consent_page(app, client, &pending))
    };
    if new_browser {
        set_cookie(
            &mut resp,
            &app.cookie_name(BROWSER_COOKIE),
            &browser,
            400 * 24 * 3600,
            app.secure_cookies,
        );
    }
    resp
}

/// Starts the Google leg: our own state, nonce and PKCE verifier, then the redirect.
pub async fn to_google(app: &App, p: &PendingAuthorization, consented: bool) -> Resp {
    let google_state = random_string(24);
    let nonce = random_string(24);
    let verifier = random_string(48);
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    if let Err(e) = app
        .store
        .start_google_leg(&p.id, &google_state, &nonce, &verifier, consented)
        .await
    {
        tracing::error!(error = %e, "storing the Google leg failed");
        return error_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Temporarily unavailable",
            "The sign-in service cannot reach its database. Try again in a minute.",
        );
    }
    match app
        .google
        .authorization_url(&google_state, &nonce, &challenge)
        .await
    {
        Ok(u) => redirect(&u),
        Err(e) => {
            tracing::error!(error = %e, "Google is unavailable");
            error_page(
                StatusCode::BAD_GATEWAY,
                "Google is unavailable",
                "Signing in with Google is not possible right now. Try again in a minute.",
            )
        }
    }
}

/// Whether the request comes from the browser that started `p`.
pub fn same_browser(app: &App, req: &Req, p: &PendingAuthorization) -> bool {
    req.cookie(&app.cookie_name(BROWSER_COOKIE))
        .is_some_and(|b| bool::from(digest(&b).ct_eq(&p.browser_hash)))
}

/// `POST /consent`: the consent form.
pub async fn consent(app: &App, req: &Req) -> Resp {
    let f = req.form();
    let (Some(id), Some(csrf)) = (f.get("request"), f.get("csrf")) else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "Invalid request",
            "The approval form was incomplete.",
        );
    };
    let p = match app.store.pending(id).await {
        Ok(Some(p)) => p,
        Ok(None) => {
            return error_page(
                StatusCode::BAD_REQUEST,
                "Sign-in expired",
                "This sign-in request has expired or was already used.",
            )
        }
        Err(e) => {
            tracing::error!(error = %e, "reading an authorization request failed");
            return error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Temporarily unavailable",
                "The sign-in service cannot reach its database. Try again in a minute.",
            );
        }
    };
    if !same_browser(app, req, &p) || !bool::from(csrf.as_bytes().ct_eq(p.csrf.as_bytes())) {
        return error_page(
            StatusCode::FORBIDDEN,
            "Approval refused",
            "This approval did not come from the browser that started the sign-in.",
        );
    }
    let event = |kind| {
        let mut e = AuthEvent::new(kind)
            .client_id(p.client_id.clone())
            .from(req.client_ip, req.user_agent());
        if let (Some(s), Some(m)) = (&p.user_sub, &p.user_email) {
            e = e.user(s, m);
        }
        e
    };
    if f.get("action") != Some("approve") {
        app.audit.record(&event(AuthEventKind::ConsentDenied));
        let _ = app.store.delete_pending(&p.id).await;
        return error_to_client(
            app,
            &p.redirect_uri,
            Some(&p.state),
            "access_denied",
            "the user denied access",
        );
    }
    app.audit.record(&event(AuthEventKind::ConsentGranted));
    match (&p.user_sub, &p.user_email) {
        // Consent asked after Google sign-in: finish now.
        (Some(sub), Some(email)) => {
            let user = UserRecord {
                sub: sub.clone(),
                email: email.clone(),
                hd: p.user_hd.clone(),
                groups: p.user_groups.clone().unwrap_or_default(),
            };
            let ttl = app.cfg.authorization.consent_ttl;
            if let Err(e) = app
                .store
                .grant_consent(sub, &p.client_id, &p.resource, &p.scope, ttl)
                .await
            {
                tracing::warn!(error = %e, "recording consent failed");
            }
            finish(app, &p, &user).await
        }
        _ => to_google(app, &p, true).await,
    }
}

/// Issues the authorization code and sends the browser back to the client.
pub async fn finish(app: &App, p: &PendingAuthorization, user: &UserRecord) -> Resp {
    let code = random_string(32);
    let record = CodeRecord {
        client_id: p.client_id.clone(),
        redirect_uri: p.redirect_uri.clone(),
        resource: p.resource.clone(),
        scope: p.scope.clone(),
        code_challenge: p.code_challenge.clone(),
        user_sub: user.sub.clone(),
        email: user.email.clone(),
        hd: user.hd.clone(),
        groups: user.groups.clone(),
    };
    let stored = app
        .store
        .insert_code(
            &digest(&code),
            &record,
            app.cfg.tokens.code_ttl.as_secs_f64(),
        )
        .await;
    if let Err(e) = stored {
        tracing::error!(error = %e, "storing an authorization code failed");
        return error_to_client(
            app,
            &p.redirect_uri,
            Some(&p.state),
            "temporarily_unavailable",
            "the authorization server cannot reach its database",
        );
    }
    let _ = app.store.delete_pending(&p.id).await;
    redirect(&client_redirect_url(
        app,
        &p.redirect_uri,
        &[("code", &code), ("state", &p.state)],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_must_look_like_s256() {
        assert!(valid_challenge(
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        ));
        assert!(!valid_challenge("short"));
        assert!(!valid_challenge(
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw+cM"
        ));
    }

    #[test]
    fn hosts_are_shown_with_ports() {
        assert_eq!(host_of("http://127.0.0.1:3000/cb"), "127.0.0.1:3000");
        assert_eq!(host_of("https://claude.ai/api/x"), "claude.ai");
    }
}
