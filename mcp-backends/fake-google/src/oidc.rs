//! Sign-in: OIDC discovery, the authorization endpoint (account chooser), the token
//! endpoint (authorization code with PKCE, and the JWT-bearer grant for service
//! accounts), JWKS, userinfo and tokeninfo.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::StatusCode;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::http::{html, json, oauth_error, redirect, text, Req, Resp};
use crate::keys::decode_unverified;
use crate::pages;
use crate::state::{random_token, Code, Grant, State, CODE_LIFETIME, TOKEN_LIFETIME};

pub const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

pub fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub fn discovery(st: &State) -> Resp {
    let i = &st.issuer;
    json(
        StatusCode::OK,
        &json!({
            "issuer": i,
            "authorization_endpoint": format!("{i}/authorize"),
            "token_endpoint": format!("{i}/token"),
            "userinfo_endpoint": format!("{i}/userinfo"),
            "revocation_endpoint": format!("{i}/revoke"),
            "jwks_uri": format!("{i}/jwks"),
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "scopes_supported": ["openid", "email", "profile"],
            "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
            "claims_supported": ["aud", "email", "email_verified", "exp", "hd", "iat", "iss", "name", "nonce", "sub"],
            "code_challenge_methods_supported": ["plain", "S256"],
            "grant_types_supported": ["authorization_code", "refresh_token", JWT_BEARER],
        }),
    )
}

pub fn jwks(st: &State) -> Resp {
    json(StatusCode::OK, &st.key.jwks())
}

/// Checks client and redirect URI; an error here is shown, never redirected.
fn check_client(
    st: &State,
    p: &std::collections::HashMap<String, String>,
) -> Result<(), Box<Resp>> {
    let client_id = p.get("client_id").map(String::as_str).unwrap_or("");
    let Some(client) = st.client(client_id) else {
        return Err(Box::new(text(
            StatusCode::UNAUTHORIZED,
            "Error 401: invalid_client\nThe OAuth client was not found.",
        )));
    };
    let redirect_uri = p.get("redirect_uri").map(String::as_str).unwrap_or("");
    if url::Url::parse(redirect_uri).is_err() {
        return Err(Box::new(text(
            StatusCode::BAD_REQUEST,
            "Error 400: invalid_request\nMissing or invalid redirect_uri.",
        )));
    }
    if !client.redirect_uris.is_empty() && !client.redirect_uris.iter().any(|u| u == redirect_uri) {
        return Err(Box::new(text(
            StatusCode::BAD_REQUEST,
            "Error 400: redirect_uri_mismatch",
        )));
    }
    Ok(())
}

fn redirect_with(redirect_uri: &str, pairs: &[(&str, &str)]) -> Resp {
    match url::Url::parse(redirect_uri) {
        Ok(mut u) => {
            {
                let mut q = u.query_pairs_mut();
                for (k, v) in pairs {
                    q.append_pair(k, v);
                }
            }
            redirect(u.as_str())
        }
        Err(_) => text(StatusCode::BAD_REQUEST, "invalid redirect_uri"),
    }
}

fn error_redirect(p: &std::collections::HashMap<String, String>, error: &str) -> Resp {
    let redirect_uri = p.get("redirect_uri").map(String::as_str).unwrap_or("");
    let mut pairs = vec![("error", error)];
    if let Some(s) = p.get("state") {
        pairs.push(("state", s.as_str()));
    }
    redirect_with(redirect_uri, &pairs)
}

const PASSED_PARAMS: &[&str] = &[
    "client_id",
    "redirect_uri",
    "response_type",
    "scope",
    "state",
    "nonce",
    "code_challenge",
    "code_challenge_method",
    "hd",
    "prompt",
    "login_hint",
    "access_type",
    "include_granted_scopes",
];

/// `GET /authorize`: validate, then show the account chooser (or, with
/// `prompt=none` and a `login_hint` naming a user, answer at once).
pub fn authorize_get(st: &State, req: &Req) -> Resp {
    st.count("authorize");
    let p = &req.query;
    if let Err(r) = check_client(st, p) {
        return *r;
    }
    if p.get("response_type").map(String::as_str) != Some("code") {
        return error_redirect(p, "unsupported_response_type");
    }
    if let Some(m) = p.get("code_challenge_method") {
        if m != "S256" && m != "plain" {
            return error_redirect(p, "invalid_request");
        }
    }
    if p.get("prompt").map(String::as_str) == Some("none") {
        let hinted = p.get("login_hint").and_then(|e| st.user(e));
        return match hinted {
            Some(u) => issue_code(st, p, &u.email),
            None => error_redirect(p, "login_required"),
        };
    }
    let params: Vec<(String, String)> = PASSED_PARAMS
        .iter()
        .filter_map(|k| p.get(*k).map(|v| (k.to_string(), v.clone())))
        .collect();
    let hd = p.get("hd").map(String::as_str).filter(|h| *h != "*");
    html(StatusCode::OK, pages::chooser(&params, &st.all_users(), hd))
}

/// `POST /authorize`: the chooser's form. `email` picks the account, `deny` cancels.
pub fn authorize_post(st: &State, req: &Req) -> Resp {
    let p = req.form();
    if let Err(r) = check_client(st, &p) {
        return *r;
    }
    if p.contains_key("deny") {
        return error_redirect(&p, "access_denied");
    }
    let Some(user) = p.get("email").and_then(|e| st.user(e)) else {
        return text(StatusCode::BAD_REQUEST, "unknown account");
    };
    issue_code(st, &p, &user.email)
}

fn issue_code(st: &State, p: &std::collections::HashMap<String, String>, email: &str) -> Resp {
    st.count("login");
    let code = random_token("4/0fake-");
    let scope = p
        .get("scope")
        .cloned()
        .unwrap_or_else(|| "openid email profile".into());
    let entry = Code {
        client_id: p.get("client_id").cloned().unwrap_or_default(),
        redirect_uri: p.get("redirect_uri").cloned().unwrap_or_default(),
        email: email.to_string(),
        nonce: p.get("nonce").cloned(),
        code_challenge: p.get("code_challenge").cloned(),
        code_challenge_method: p.get("code_challenge_method").cloned(),
        scope: scope.clone(),
        expires: Instant::now() + CODE_LIFETIME,
    };
    if let Ok(mut codes) = st.codes.lock() {
        let now = Instant::now();
        codes.retain(|_, c| c.expires > now);
        codes.insert(code.clone(), entry);
    }
    let mut pairs = vec![("code", code.as_str()), ("scope", scope.as_str())];
    if let Some(s) = p.get("state") {
        pairs.push(("state", s.as_str()));
    }
    redirect_with(
        p.get("redirect_uri").map(String::as_str).unwrap_or(""),
        &pairs,
    )
}

/// `POST /token`.
pub fn token(st: &State, req: &Req) -> Resp {
    let p = req.form();
    match p.get("grant_type").map(String::as_str) {
        Some("authorization_code") => {
            st.count("token.authorization_code");
            token_code(st, req, &p)
        }
        Some(JWT_BEARER) => {
            st.count("token.jwt_bearer");
            token_jwt_bearer(st, &p)
        }
        Some(_) => oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "Invalid grant_type",
        ),
        None => oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Missing required parameter: grant_type",
        ),
    }
}

fn token_code(st: &State, req: &Req, p: &std::collections::HashMap<String, String>) -> Resp {
    let (client_id, secret) = match req.basic() {
        Some((id, s)) => (id, Some(s)),
        None => (
            p.get("client_id").cloned().unwrap_or_default(),
            p.get("client_secret").cloned(),
        ),
    };
    let Some(client) = st.client(&client_id) else {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "The OAuth client was not found.",
        );
    };
    if let Some(expected) = &client.client_secret {
        if secret.as_deref() != Some(expected.as_str()) {
            return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "Unauthorized");
        }
    }
    let code = p.get("code").cloned().unwrap_or_default();
    let entry = st.codes.lock().ok().and_then(|mut c| c.remove(&code));
    let Some(entry) = entry else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "Bad Request");
    };
    if entry.expires < Instant::now()
        || entry.client_id != client_id
        || Some(&entry.redirect_uri) != p.get("redirect_uri")
    {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "Bad Request");
    }
    if let Some(challenge) = &entry.code_challenge {
        let verifier = p.get("code_verifier").map(String::as_str).unwrap_or("");
        let computed = match entry.code_challenge_method.as_deref() {
            Some("S256") => URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())),
            _ => verifier.to_string(),
        };
        if verifier.is_empty() || &computed != challenge {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                "Invalid code verifier.",
            );
        }
    }
    let Some(user) = st.user(&entry.email) else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "account deleted");
    };
    let now = now_s();
    let mut claims = json!({
        "iss": st.issuer,
        "azp": client_id,
        "aud": client_id,
        "sub": user.sub,
        "email": user.email,
        "email_verified": user.email_verified,
        "name": user.name,
        "iat": now,
        "exp": now + 3600,
    });
    if let Some(hd) = &user.hd {
        claims["hd"] = json!(hd);
    }
    if let Some(n) = &entry.nonce {
        claims["nonce"] = json!(n);
    }
    let id_token = match st.key.sign_jwt(&claims) {
        Ok(t) => t,
        Err(e) => {
            return oauth_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                &e.to_string(),
            )
        }
    };
    let access_token = st.issue_token(
        "ya29.fake-user-",
        Grant::User {
            email: user.email.clone(),
            client_id: client_id.clone(),
            scope: entry.scope.clone(),
        },
    );
    json(
        StatusCode::OK,
        &json!({
            "access_token": access_token,
            "expires_in": TOKEN_LIFETIME.as_secs(),
            "token_type": "Bearer",
            "scope": entry.scope,
            "id_token": id_token,
        }),
    )
}

/// The JWT-bearer grant (RFC 7523) for service accounts: any well-formed RS256
/// assertion from a configured service account, with a scope and an unexpired `exp`.
fn token_jwt_bearer(st: &State, p: &std::collections::HashMap<String, String>) -> Resp {
    let bad = |d: &str| oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", d);
    let Some((header, claims)) = p.get("assertion").and_then(|a| decode_unverified(a)) else {
        return bad("Invalid JWT: malformed assertion");
    };
    if header["alg"] != "RS256" {
        return bad("Invalid JWT: alg must be RS256");
    }
    let iss = claims["iss"].as_str().unwrap_or("");
    if !st.service_account_known(iss) {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "The OAuth client was not found.",
        );
    }
    let scope = claims["scope"].as_str().unwrap_or("").to_string();
    if scope.is_empty() {
        return bad("Invalid JWT: No scope specified");
    }
    let now = now_s();
    let exp = claims["exp"].as_u64().unwrap_or(0);
    let iat = claims["iat"].as_u64().unwrap_or(0);
    if exp <= now || iat > now + 300 || exp > iat + 3600 {
        return bad("Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe.");
    }
    let subject = claims["sub"].as_str().map(str::to_string);
    if let Some(s) = &subject {
        if st.user(s).is_none() {
            return oauth_error(
                StatusCode::UNAUTHORIZED,
                "unauthorized_client",
                "Client is unauthorized to retrieve access tokens using this method, or client not authorized for any of the scopes requested.",
            );
        }
    }
    let token = st.issue_token(
        "ya29.fake-sa-",
        Grant::ServiceAccount {
            email: iss.to_string(),
            subject,
            scope,
        },
    );
    json(
        StatusCode::OK,
        &json!({"access_token": token, "expires_in": TOKEN_LIFETIME.as_secs(), "token_type": "Bearer"}),
    )
}

pub fn userinfo(st: &State, req: &Req) -> Resp {
    st.count("userinfo");
    let grant = req.bearer().and_then(|t| st.token(t)).map(|t| t.grant);
    let Some(Grant::User { email, .. }) = grant else {
        return json(
            StatusCode::UNAUTHORIZED,
            &json!({"error": "invalid_request", "error_description": "Invalid Credentials"}),
        );
    };
    let Some(u) = st.user(&email) else {
        return json(StatusCode::UNAUTHORIZED, &json!({"error": "invalid_token"}));
    };
    let mut out =
        json!({"sub": u.sub, "email": u.email, "email_verified": u.email_verified, "name": u.name});
    if let Some(hd) = &u.hd {
        out["hd"] = json!(hd);
    }
    json(StatusCode::OK, &out)
}

/// `GET|POST /tokeninfo?access_token=…` or `?id_token=…`, Google's string-valued shape.
pub fn tokeninfo(st: &State, req: &Req) -> Resp {
    st.count("tokeninfo");
    let mut p = req.query.clone();
    p.extend(req.form());
    let invalid = || {
        json(
            StatusCode::BAD_REQUEST,
            &json!({"error": "invalid_token", "error_description": "Invalid Value"}),
        )
    };
    if let Some(at) = p.get("access_token") {
        let Some(t) = st.token(at) else {
            return invalid();
        };
        let left = t.expires.saturating_duration_since(Instant::now());
        let exp = now_s() + left.as_secs();
        return match t.grant {
            Grant::User {
                email,
                client_id,
                scope,
            } => {
                let Some(u) = st.user(&email) else {
                    return invalid();
                };
                json(
                    StatusCode::OK,
                    &json!({"azp": client_id, "aud": client_id, "sub": u.sub, "scope": scope,
                        "exp": exp.to_string(), "expires_in": left.as_secs().to_string(),
                        "email": u.email, "email_verified": u.email_verified.to_string(),
                        "access_type": "online"}),
                )
            }
            Grant::ServiceAccount { email, scope, .. } => json(
                StatusCode::OK,
                &json!({"azp": email, "aud": email, "scope": scope, "exp": exp.to_string(),
                    "expires_in": left.as_secs().to_string(), "access_type": "online"}),
            ),
            Grant::Federated { .. } => invalid(),
        };
    }
    if let Some(it) = p.get("id_token") {
        let Some((header, claims)) = decode_unverified(it) else {
            return invalid();
        };
        if header["kid"] != st.key.kid.as_str() || claims["exp"].as_u64().unwrap_or(0) <= now_s() {
            return invalid();
        }
        let mut out = serde_json::Map::new();
        if let Value::Object(m) = claims {
            for (k, v) in m {
                let s = match v {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                out.insert(k, Value::String(s));
            }
        }
        out.insert("alg".into(), json!("RS256"));
        out.insert("kid".into(), json!(st.key.kid));
        return json(StatusCode::OK, &Value::Object(out));
    }
    invalid()
}

/// `POST /revoke`: accepted and ignored (the sidecar never needs Google's tokens).
pub fn revoke(st: &State) -> Resp {
    st.count("revoke");
    json(StatusCode::OK, &json!({}))
}
