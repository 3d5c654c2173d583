//! The per-address budget of unauthenticated lookups.
//!
//! Every `GET /authorize` may fetch a Client ID Metadata Document and stores a
//! pending sign-in; a `POST /token` naming a metadata-document client that is not
//! in the cache makes the server fetch it. Both are open to anyone, so each costs
//! one token of the caller's bucket ([`crate::ratelimit::RateLimiter`], `[rate_limit]`
//! `lookups_burst` / `lookups_per_second`); an empty bucket is answered 429 with
//! `Retry-After` (seconds): an HTML page on the browser-facing `/authorize`, an
//! OAuth JSON error on `/token`. The caller is the request's client address
//! (`[server] client_ip_header` when configured, else the TCP peer).
//!
//! Not covered here: `/register` has its own limit (`[clients]
//! registration_per_minute`); `/token` for a registered or cached client costs
//! nothing; the budget is per replica and does not stop a distributed flood.

use std::time::Duration;

use http::{HeaderValue, StatusCode};

use crate::app::App;
use crate::audit::{AuthEvent, AuthEventKind};
use crate::authorize::error_page;
use crate::clients::cimd;
use crate::http::{oauth_error, Req, Resp};

/// `Some(429)` when the request's address has no lookup left; `None` lets it through
/// (having spent a token when the request is a lookup).
pub async fn check(app: &App, req: &Req) -> Option<Resp> {
    let retry = match req.path.as_str() {
        "/authorize" => app.lookup_limiter.check(req.client_ip).err()?,
        "/token" => {
            let id = token_client_id(req)?;
            if !cimd::looks_like_cimd(&id, app.cfg.clients.allow_http_cimd)
                || cimd::cached(app, &id).await
            {
                return None;
            }
            app.lookup_limiter.check(req.client_ip).err()?
        }
        _ => return None,
    };
    let secs = retry.as_secs().max(1);
    let kind = if req.path == "/authorize" {
        AuthEventKind::AuthorizationRefused
    } else {
        AuthEventKind::TokenRefused
    };
    app.audit.record(
        &AuthEvent::new(kind)
            .reason("rate limited (unauthenticated lookups)")
            .from(req.client_ip, req.user_agent()),
    );
    let mut resp = if req.path == "/authorize" {
        error_page(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many sign-in attempts",
            &format!(
                "Too many sign-in attempts came from your network. Wait {secs} seconds, then start again from your application."
            ),
        )
    } else {
        oauth_error(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_requests",
            &format!("too many unauthenticated lookups from this address; retry in {secs} s"),
        )
    };
    set_retry_after(&mut resp, Duration::from_secs(secs));
    Some(resp)
}

/// The `client_id` of a token request: the form's, else the Basic user name.
fn token_client_id(req: &Req) -> Option<String> {
    if let Some(id) = req.form().get("client_id") {
        return Some(id.to_string());
    }
    req.basic_auth().ok().flatten().map(|(id, _)| id)
}

fn set_retry_after(resp: &mut Resp, retry: Duration) {
    if let Ok(v) = HeaderValue::from_str(&retry.as_secs().to_string()) {
        resp.headers_mut().insert(http::header::RETRY_AFTER, v);
    }
}
