//! `server.mode = "google-direct"`: standard clients are registered as the company's
//! Google OAuth client (its client id only, never its secret) and authorize at Google;
//! their token requests come to the sidecar's `/token`, which adds the secret and
//! forwards them to Google.
//!
//! Not an open proxy: only requests naming the configured Google client id, only the
//! `authorization_code` (with a PKCE `code_verifier`) and `refresh_token` grants, only
//! the fields those grants need, bodies of at most [`MAX_FORWARDED_BODY`] bytes, and
//! never a code meant for the sidecar's own `/callback`. Neither the secret, nor codes,
//! nor tokens are logged. What it does not do: check the person (Google does, and the
//! gateway checks the domain of Google's tokens).

use http::{HeaderValue, StatusCode};
use serde_json::Value;

use crate::app::App;
use crate::audit::{AuthEvent, AuthEventKind};
use crate::clients::check_redirect_uri;
use crate::config::Mode;
use crate::http::{json, oauth_error, Params, Req, Resp};

/// The largest token request forwarded to Google.
pub const MAX_FORWARDED_BODY: usize = 4096;

/// Whether this token request is a google-direct client's (names Google's client id).
pub fn applies(app: &App, req: &Req, f: &Params) -> bool {
    if app.cfg.server.mode != Mode::GoogleDirect {
        return false;
    }
    let basic_id = req.basic_auth().ok().flatten().map(|(id, _)| id);
    let id = basic_id.as_deref().or(f.get("client_id"));
    id == Some(app.cfg.google.client_id.as_str())
}

fn bad(error: &str, description: &str) -> Resp {
    oauth_error(StatusCode::BAD_REQUEST, error, description)
}

/// The fields sent to Google for this grant, or the `(error, description)` answered
/// instead.
fn forwarded_form<'a>(
    app: &App,
    f: &'a Params,
) -> Result<Vec<(&'static str, &'a str)>, (&'static str, String)> {
    let need = |k: &'static str| {
        f.get(k)
            .map(|v| (k, v))
            .ok_or_else(|| ("invalid_request", format!("{k} is required")))
    };
    match f.get("grant_type") {
        Some("authorization_code") => {
            let redirect = need("redirect_uri")?;
            if redirect.1 == app.url("/callback") {
                return Err((
                    "invalid_grant",
                    "codes issued to the authorization server's own callback cannot be redeemed here".into(),
                ));
            }
            check_redirect_uri(redirect.1, &app.cfg.clients.allowed_redirect_uris)
                .map_err(|e| ("invalid_grant", e))?;
            Ok(vec![
                ("grant_type", "authorization_code"),
                need("code")?,
                redirect,
                need("code_verifier")?,
            ])
        }
        Some("refresh_token") => {
            let mut form = vec![("grant_type", "refresh_token"), need("refresh_token")?];
            if let Some(s) = f.get("scope") {
                form.push(("scope", s));
            }
            Ok(form)
        }
        Some(other) => Err((
            "unsupported_grant_type",
            format!("grant_type {other:?} is not supported (authorization_code, refresh_token)"),
        )),
        None => Err(("invalid_request", "grant_type is required".into())),
    }
}

/// `POST /token` for the Google client: forwarded to Google with the secret added.
pub async fn token(app: &App, req: &Req, f: &Params) -> Resp {
    let event = |kind, reason: String| {
        app.audit.record(
            &AuthEvent::new(kind)
                .client_id(app.cfg.google.client_id.clone())
                .reason(reason)
                .from(req.client_ip, req.user_agent()),
        );
    };
    if req.body.len() > MAX_FORWARDED_BODY {
        event(
            AuthEventKind::TokenRefused,
            "google-direct: body too large".into(),
        );
        return bad(
            "invalid_request",
            &format!("the token request is larger than {MAX_FORWARDED_BODY} bytes"),
        );
    }
    let form = match forwarded_form(app, f) {
        Ok(form) => form,
        Err((error, description)) => {
            event(
                AuthEventKind::TokenRefused,
                format!("google-direct: {error}: {description}"),
            );
            return bad(error, &description);
        }
    };
    let (status, answer) = match app.google.forward_token(&form).await {
        Ok(x) => x,
        Err(e) => {
            tracing::warn!(error = %e, "google-direct: forwarding a token request failed");
            return oauth_error(
                StatusCode::BAD_GATEWAY,
                "temporarily_unavailable",
                "Google's token endpoint is unavailable; retry later",
            );
        }
    };
    let grant = form.first().map(|(_, g)| *g).unwrap_or("");
    let status = match StatusCode::from_u16(status) {
        Ok(s) if s.is_success() => {
            event(AuthEventKind::TokenIssued, format!("google-direct {grant}"));
            s
        }
        Ok(s) if s.is_client_error() => {
            let error = answer["error"].as_str().unwrap_or("");
            if s == StatusCode::UNAUTHORIZED {
                tracing::warn!(
                    "google-direct: Google refused the sidecar's client credentials; check google.client_id and google.client_secret"
                );
            }
            event(
                AuthEventKind::TokenRefused,
                format!("google-direct {grant}: Google HTTP {} {error}", s.as_u16()),
            );
            s
        }
        _ => {
            tracing::warn!(status, "google-direct: Google's token endpoint failed");
            return oauth_error(
                StatusCode::BAD_GATEWAY,
                "temporarily_unavailable",
                "Google's token endpoint failed; retry later",
            );
        }
    };
    let mut r = json(status, &strip_secret(answer));
    r.headers_mut()
        .insert(http::header::PRAGMA, HeaderValue::from_static("no-cache"));
    r
}

/// Google never echoes the secret; should an answer ever carry one, it is dropped.
fn strip_secret(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.remove("client_secret");
    }
    v
}
