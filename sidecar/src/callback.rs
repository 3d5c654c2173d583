//! `GET /callback`: Google sends the browser back here. The code is exchanged, the ID
//! token validated, the person checked against policy (verified email, allowed `hd`,
//! groups from the Directory API), then the client gets its own code, or a refused
//! person gets a page and the client `error=access_denied`.

use http::StatusCode;

use crate::app::App;
use crate::audit::{AuthEvent, AuthEventKind};
use crate::authorize::{
    client_redirect_url, consent_page, error_page, error_to_client, finish, same_browser,
    SESSION_COOKIE,
};
use crate::clients::find_client;
use crate::clients::register::random_string;
use crate::google::{GoogleError, IdClaims};
use crate::http::{html, set_cookie, Params, Req, Resp};
use crate::pages;
use crate::policy::{check_groups, check_identity, Refusal};
use crate::store::{digest, PendingAuthorization, UserRecord};

const SESSION_TTL_S: u64 = 30 * 24 * 3600;

/// `GET /callback`: the pending request back, the person signed in and admitted, then
/// their code (or the consent page).
pub async fn callback(app: &App, req: &Req) -> Resp {
    let q = req.query();
    let p = match take_pending(app, req, &q).await {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    let claims = match exchange(app, req, &q, &p).await {
        Ok(c) => c,
        Err(resp) => return resp,
    };
    let user = match admit(app, req, &p, &claims).await {
        Ok(u) => u,
        Err(resp) => return resp,
    };
    complete(app, req, &p, user).await
}

/// An event about `p`'s sign-in, from this browser.
fn base_event(req: &Req, p: &PendingAuthorization, kind: AuthEventKind) -> AuthEvent {
    AuthEvent::new(kind)
        .client_id(p.client_id.clone())
        .resource(p.resource.clone())
        .from(req.client_ip, req.user_agent())
}

/// The pending authorization named by Google's `state`, taken (once) and checked to
/// belong to this browser.
async fn take_pending(app: &App, req: &Req, q: &Params) -> Result<PendingAuthorization, Resp> {
    let Some(google_state) = q.get("state") else {
        return Err(error_page(
            StatusCode::BAD_REQUEST,
            "Invalid sign-in",
            "Google's answer carries no state.",
        ));
    };
    let p = match app.store.take_by_google_state(google_state).await {
        Ok(Some(p)) => p,
        Ok(None) => {
            return Err(error_page(
                StatusCode::BAD_REQUEST,
                "Sign-in expired",
                "This sign-in has expired or was already completed.",
            ))
        }
        Err(e) => {
            tracing::error!(error = %e, "reading an authorization request failed");
            return Err(error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Temporarily unavailable",
                "The sign-in service cannot reach its database. Try again in a minute.",
            ));
        }
    };
    if !same_browser(app, req, &p) {
        return Err(error_page(
            StatusCode::FORBIDDEN,
            "Sign-in refused",
            "This sign-in was started in another browser.",
        ));
    }
    Ok(p)
}

/// Google's answer: an error goes back to the client; a code is exchanged for the
/// validated ID token's claims.
async fn exchange(
    app: &App,
    req: &Req,
    q: &Params,
    p: &PendingAuthorization,
) -> Result<IdClaims, Resp> {
    let base_event = |kind| base_event(req, p, kind);
    if let Some(err) = q.get("error") {
        app.audit
            .record(&base_event(AuthEventKind::LoginRefused).reason(format!("google: {err}")));
        let _ = app.store.delete_pending(&p.id).await;
        return Err(error_to_client(
            app,
            &p.redirect_uri,
            Some(&p.state),
            "access_denied",
            &format!("Google sign-in did not complete ({err})"),
        ));
    }
    let (Some(code), Some(verifier), Some(nonce)) = (
        q.get("code"),
        p.google_verifier.as_deref(),
        p.google_nonce.as_deref(),
    ) else {
        return Err(error_page(
            StatusCode::BAD_REQUEST,
            "Invalid sign-in",
            "Google's answer carries no code.",
        ));
    };
    let claims = match app.google.exchange(code, verifier, nonce).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "Google sign-in failed");
            app.audit
                .record(&base_event(AuthEventKind::LoginRefused).reason(e.to_string()));
            let _ = app.store.delete_pending(&p.id).await;
            return Err(html(
                StatusCode::BAD_GATEWAY,
                pages::refusal(
                    "Signing in with Google did not complete. Try again.",
                    None,
                    Some(&return_url(
                        app,
                        p,
                        "temporarily_unavailable",
                        "Google sign-in failed",
                    )),
                ),
            ));
        }
    };
    Ok(claims)
}

/// The person checked against policy (verified email, allowed `hd`, groups from the
/// directory); a refusal is a page and `access_denied` for the client.
async fn admit(
    app: &App,
    req: &Req,
    p: &PendingAuthorization,
    claims: &IdClaims,
) -> Result<UserRecord, Resp> {
    let base_event = |kind| base_event(req, p, kind);
    let email = claims
        .email
        .clone()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let hd = claims.hd.as_deref().map(str::to_ascii_lowercase);
    if let Err(r) = check_identity(&app.cfg.google, &email, claims.verified(), hd.as_deref()) {
        return Err(refuse(app, req, p, &email, &claims.sub, r).await);
    }
    let groups = match app.google.groups(&email).await {
        Ok(g) => g,
        Err(GoogleError::UserNotFound) => {
            let r = Refusal {
                code: "not_in_directory",
                message: format!("{email} was not found in the company directory."),
            };
            return Err(refuse(app, req, p, &email, &claims.sub, r).await);
        }
        Err(e) => {
            tracing::error!(error = %e, "reading groups failed");
            app.audit.record(
                &base_event(AuthEventKind::LoginRefused)
                    .user(&claims.sub, &email)
                    .reason(e.to_string()),
            );
            let _ = app.store.delete_pending(&p.id).await;
            return Err(html(
                StatusCode::BAD_GATEWAY,
                pages::refusal(
                    "Your groups could not be read from the company directory. Try again in a minute.",
                    Some(&email),
                    Some(&return_url(app, p, "temporarily_unavailable", "the directory is unavailable")),
                ),
            ));
        }
    };
    if let Err(r) = check_groups(&app.cfg.google, &email, &groups) {
        return Err(refuse(app, req, p, &email, &claims.sub, r).await);
    }
    let user = UserRecord {
        sub: claims.sub.clone(),
        email: email.clone(),
        hd,
        groups,
    };
    Ok(user)
}

/// Stores the person, opens their session, and either finishes (consent given or
/// remembered) or shows the consent page.
async fn complete(app: &App, req: &Req, p: &PendingAuthorization, user: UserRecord) -> Resp {
    let base_event = |kind| base_event(req, p, kind);
    if let Err(e) = app.store.upsert_user(&user).await {
        tracing::error!(error = %e, "storing the user failed");
        return error_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Temporarily unavailable",
            "The sign-in service cannot reach its database. Try again in a minute.",
        );
    }
    app.audit.record(
        &base_event(AuthEventKind::LoginOk)
            .user(&user.sub, &user.email)
            .groups(&user.groups),
    );
    let session = random_string(24);
    let _ = app
        .store
        .create_session(&digest(&session), &user.sub, SESSION_TTL_S as f64)
        .await;
    let consented = if p.consented {
        let ttl = app.cfg.authorization.consent_ttl;
        if let Err(e) = app
            .store
            .grant_consent(&user.sub, &p.client_id, &p.resource, &p.scope, ttl)
            .await
        {
            tracing::warn!(error = %e, "recording consent failed");
        }
        true
    } else {
        !p.force_consent
            && app
                .store
                .has_consent(&user.sub, &p.client_id, &p.resource, &p.scope)
                .await
                .unwrap_or(false)
    };
    let mut resp = if consented {
        finish(app, p, &user).await
    } else {
        // Someone else signed in than the browser's remembered person: ask them.
        match (
            app.store.set_pending_user(&p.id, &user).await,
            find_client(app, &p.client_id).await,
        ) {
            (Ok(()), Ok(client)) => {
                let mut waiting: PendingAuthorization = p.clone();
                waiting.user_email = Some(user.email.clone());
                html(StatusCode::OK, consent_page(app, &client, &waiting))
            }
            _ => error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Temporarily unavailable",
                "The sign-in service cannot reach its database. Try again in a minute.",
            ),
        }
    };
    set_cookie(
        &mut resp,
        &app.cookie_name(SESSION_COOKIE),
        &session,
        SESSION_TTL_S,
        app.secure_cookies,
    );
    resp
}

fn return_url(app: &App, p: &PendingAuthorization, error: &str, description: &str) -> String {
    client_redirect_url(
        app,
        &p.redirect_uri,
        &[
            ("error", error),
            ("error_description", description),
            ("state", &p.state),
        ],
    )
}

async fn refuse(
    app: &App,
    req: &Req,
    p: &PendingAuthorization,
    email: &str,
    sub: &str,
    r: Refusal,
) -> Resp {
    app.audit.record(
        &AuthEvent::new(AuthEventKind::LoginRefused)
            .client_id(p.client_id.clone())
            .user(sub, email)
            .reason(r.code)
            .from(req.client_ip, req.user_agent()),
    );
    let _ = app.store.delete_pending(&p.id).await;
    html(
        StatusCode::FORBIDDEN,
        pages::refusal(
            &r.message,
            (!email.is_empty()).then_some(email),
            Some(&return_url(app, p, "access_denied", &r.message)),
        ),
    )
}
