//! RFC 7591 Dynamic Client Registration at `POST /register`.
//!
//! `application_type` (OIDC Registration §2, required of MCP clients by the
//! 2026-07-28 revision): `native` clients may use loopback (and allowlisted) redirect
//! URIs; `web` clients may not use loopback ones. A client that omits it gets the
//! type its redirect URIs imply (all loopback → `native`, otherwise `web`), so older
//! clients keep working; the answer always states the type registered.

use std::time::SystemTime;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::{HeaderValue, StatusCode};
use rand::RngCore;
use serde_json::{json, Map, Value};

use super::{check_redirect_uri, detect_client, RedirectKind};
use crate::app::App;
use crate::audit::{AuthEvent, AuthEventKind};
use crate::config::Mode;
use crate::http::{json, oauth_error, Req, Resp};
use crate::store::{digest, ClientRecord};

pub const AUTH_METHODS: &[&str] = &["none", "client_secret_basic", "client_secret_post"];

/// A random URL-safe string of `bytes` random bytes.
pub fn random_string(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut b);
    URL_SAFE_NO_PAD.encode(b)
}

/// A validated registration request.
#[derive(Debug)]
pub struct Registration {
    pub redirect_uris: Vec<String>,
    pub application_type: String,
    pub token_endpoint_auth_method: String,
    pub client_name: Option<String>,
    pub metadata: Map<String, Value>,
    pub all_loopback: bool,
}

/// A metadata error: `(error code, description)`.
type MetaError = (&'static str, String);

fn meta_err(d: String) -> MetaError {
    ("invalid_client_metadata", d)
}

/// Typed reads of the metadata object's fields.
struct Fields<'a> {
    obj: &'a Map<String, Value>,
}

impl Fields<'_> {
    fn str_field(&self, k: &str, max: usize) -> Result<Option<String>, MetaError> {
        match self.obj.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.chars().count() <= max => Ok(Some(s.clone())),
            Some(Value::String(_)) => Err(meta_err(format!("{k} is longer than {max} characters"))),
            Some(_) => Err(meta_err(format!("{k} must be a string"))),
        }
    }

    fn str_list(&self, k: &str) -> Result<Option<Vec<String>>, MetaError> {
        match self.obj.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| meta_err(format!("{k} must be an array of strings")))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Err(meta_err(format!("{k} must be an array of strings"))),
        }
    }
}

/// Validates client metadata (DCR body or CIMD document). Errors are
/// `(error code, description)`.
pub fn validate_metadata(
    body: &Value,
    allowlist: &[String],
) -> Result<Registration, (&'static str, String)> {
    let Some(obj) = body.as_object() else {
        return Err(meta_err("client metadata must be a JSON object".into()));
    };
    let fields = Fields { obj };
    let (redirect_uris, kinds) = redirect_uris(&fields, allowlist)?;
    let all_loopback = kinds.iter().all(|k| *k == RedirectKind::Loopback);
    let any_loopback = kinds.contains(&RedirectKind::Loopback);
    let application_type = application_type(&fields, all_loopback, any_loopback)?;
    check_grants(&fields)?;
    let method = fields
        .str_field("token_endpoint_auth_method", 64)?
        .unwrap_or_else(|| "none".into());
    if !AUTH_METHODS.contains(&method.as_str()) {
        return Err(meta_err(format!(
            "token_endpoint_auth_method {method:?} is not supported (none, client_secret_basic, client_secret_post)"
        )));
    }
    let client_name = fields.str_field("client_name", 200)?;
    let metadata = kept_metadata(&fields)?;
    Ok(Registration {
        redirect_uris,
        application_type,
        token_endpoint_auth_method: method,
        client_name,
        metadata,
        all_loopback,
    })
}

/// `redirect_uris`: 1 to 20, each allowed; with the kind of each.
fn redirect_uris(
    fields: &Fields,
    allowlist: &[String],
) -> Result<(Vec<String>, Vec<RedirectKind>), MetaError> {
    let redirect_uris = fields.str_list("redirect_uris")?.unwrap_or_default();
    if redirect_uris.is_empty() {
        return Err((
            "invalid_redirect_uri",
            "redirect_uris is required (at least one)".into(),
        ));
    }
    if redirect_uris.len() > 20 {
        return Err(("invalid_redirect_uri", "at most 20 redirect_uris".into()));
    }
    let mut kinds = Vec::new();
    for u in &redirect_uris {
        kinds.push(check_redirect_uri(u, allowlist).map_err(|e| ("invalid_redirect_uri", e))?);
    }
    Ok((redirect_uris, kinds))
}

/// `application_type`: `native` (the default with only loopback redirects) or `web`
/// (never with a loopback redirect).
fn application_type(
    fields: &Fields,
    all_loopback: bool,
    any_loopback: bool,
) -> Result<String, MetaError> {
    Ok(match fields.str_field("application_type", 16)?.as_deref() {
        None => {
            if all_loopback {
                "native".to_string()
            } else {
                "web".to_string()
            }
        }
        Some("native") => "native".to_string(),
        Some("web") => {
            if any_loopback {
                return Err((
                    "invalid_redirect_uri",
                    "application_type \"web\" cannot use loopback redirect URIs; \
                     register with application_type \"native\""
                        .into(),
                ));
            }
            "web".to_string()
        }
        Some(other) => {
            return Err(meta_err(format!(
                "application_type {other:?} is not supported (use \"native\" or \"web\")"
            )))
        }
    })
}

/// `grant_types` and `response_types`: the authorization code flow only.
fn check_grants(fields: &Fields) -> Result<(), MetaError> {
    let grant_types = fields
        .str_list("grant_types")?
        .unwrap_or_else(|| vec!["authorization_code".into()]);
    for g in &grant_types {
        if g != "authorization_code" && g != "refresh_token" {
            return Err(meta_err(format!(
                "grant_type {g:?} is not supported (authorization_code, refresh_token)"
            )));
        }
    }
    if !grant_types.iter().any(|g| g == "authorization_code") {
        return Err(meta_err(
            "grant_types must include authorization_code".into(),
        ));
    }
    let response_types = fields
        .str_list("response_types")?
        .unwrap_or_else(|| vec!["code".into()]);
    if response_types.iter().any(|r| r != "code") {
        return Err(meta_err("only response_type \"code\" is supported".into()));
    }
    Ok(())
}

/// The optional fields kept as they are, and the grant and response types the client
/// is registered with.
fn kept_metadata(fields: &Fields) -> Result<Map<String, Value>, MetaError> {
    let mut metadata = Map::new();
    for k in [
        "client_uri",
        "logo_uri",
        "tos_uri",
        "policy_uri",
        "software_id",
        "software_version",
    ] {
        if let Some(v) = fields.str_field(k, 2048)? {
            metadata.insert(k.into(), json!(v));
        }
    }
    if let Some(scope) = fields.str_field("scope", 1024)? {
        metadata.insert("scope".into(), json!(scope));
    }
    if let Some(contacts) = fields.str_list("contacts")? {
        metadata.insert("contacts".into(), json!(contacts));
    }
    // Refresh tokens are always issued (rotating), so the grant is always registered.
    metadata.insert(
        "grant_types".into(),
        json!(["authorization_code", "refresh_token"]),
    );
    metadata.insert("response_types".into(), json!(["code"]));
    Ok(metadata)
}

/// `POST /register`.
pub async fn register(app: &App, req: &Req) -> Resp {
    if let Some(limited) = rate_limited(app, req) {
        return limited;
    }
    let reg = match read_metadata(app, req) {
        Ok(r) => r,
        Err((code, d)) => {
            let ua = req.user_agent();
            app.audit.record(
                &AuthEvent::new(AuthEventKind::ClientRegistrationRefused)
                    .reason(format!("{code}: {d}"))
                    .from(req.client_ip, ua),
            );
            return oauth_error(StatusCode::BAD_REQUEST, code, &d);
        }
    };
    let ua = req.user_agent();
    let software_id = reg.metadata.get("software_id").and_then(Value::as_str);
    let detected = detect_client(ua, reg.client_name.as_deref(), software_id);
    if app.cfg.server.mode == Mode::GoogleDirect && !reg.all_loopback {
        return register_google_direct(app, req, reg, detected);
    }
    register_client(app, req, reg, detected).await
}

/// `Some`: this address registered too often; `429` with `Retry-After`.
fn rate_limited(app: &App, req: &Req) -> Option<Resp> {
    let ua = req.user_agent();
    if let Err(retry) = app.reg_limiter.check(req.client_ip) {
        app.audit.record(
            &AuthEvent::new(AuthEventKind::ClientRegistrationRefused)
                .reason("rate limited")
                .from(req.client_ip, ua),
        );
        let mut r = oauth_error(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_requests",
            &format!(
                "too many registrations from this address; retry in {} s",
                retry.as_secs()
            ),
        );
        if let Ok(v) = HeaderValue::from_str(&retry.as_secs().to_string()) {
            r.headers_mut().insert(http::header::RETRY_AFTER, v);
        }
        return Some(r);
    }
    None
}

/// The request's JSON body, validated as client metadata.
fn read_metadata(app: &App, req: &Req) -> Result<Registration, MetaError> {
    if !req.is_json() {
        return Err(meta_err(
            "the registration request must be JSON (Content-Type: application/json)".into(),
        ));
    }
    let body: Value =
        serde_json::from_slice(&req.body).map_err(|e| meta_err(format!("invalid JSON: {e}")))?;
    validate_metadata(&body, &app.cfg.clients.allowed_redirect_uris)
}

/// Standard (web) clients authorize at Google as the company's Google client: they get
/// its id, never its secret; their token requests go through the sidecar's /token,
/// which adds the secret (see `google_direct`).
fn register_google_direct(app: &App, req: &Req, reg: Registration, detected: String) -> Resp {
    let ua = req.user_agent();
    app.audit.record(
        &AuthEvent::new(AuthEventKind::ClientRegistered)
            .client_id(app.cfg.google.client_id.clone())
            .client(detected)
            .reason("google-direct")
            .from(req.client_ip, ua),
    );
    let out = json!({
        "client_id": app.cfg.google.client_id,
        "client_id_issued_at": now_s(),
        "redirect_uris": reg.redirect_uris,
        "application_type": reg.application_type,
        "client_name": reg.client_name,
        "token_endpoint_auth_method": "none",
    });
    json(StatusCode::CREATED, &out)
}

/// A registration of our own: stored (with a secret's hash if it asked for one), then
/// answered with its metadata, its id and the secret.
async fn register_client(app: &App, req: &Req, reg: Registration, detected: String) -> Resp {
    let ua = req.user_agent();
    let client_id = format!("mcp_{}", random_string(18));
    let secret = (reg.token_endpoint_auth_method != "none").then(|| random_string(32));
    let record = ClientRecord {
        client_id: client_id.clone(),
        kind: "dcr".into(),
        secret_hash: secret.as_deref().map(digest),
        client_name: reg.client_name.clone(),
        redirect_uris: reg.redirect_uris.clone(),
        application_type: reg.application_type.clone(),
        token_endpoint_auth_method: reg.token_endpoint_auth_method.clone(),
        metadata: Value::Object(reg.metadata.clone()),
        detected_client: detected.clone(),
        user_agent: (!ua.is_empty()).then(|| ua.chars().take(512).collect()),
        source_ip: Some(req.client_ip.to_string()),
        created_at: SystemTime::now(),
        // Cleared when the registration first obtains a token (Store::create_family).
        expires_at: Some(SystemTime::now() + app.cfg.clients.unused_registration_ttl),
    };
    if let Err(e) = app.store.put_client(&record).await {
        tracing::error!(error = %e, "storing a client failed");
        return oauth_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "registration is unavailable; retry later",
        );
    }
    app.audit.record(
        &AuthEvent::new(AuthEventKind::ClientRegistered)
            .client_id(client_id.clone())
            .client(detected)
            .reason(format!(
                "{} {}",
                reg.application_type, reg.token_endpoint_auth_method
            ))
            .from(req.client_ip, ua),
    );
    let mut out = Value::Object(reg.metadata);
    out["client_id"] = json!(client_id);
    out["client_id_issued_at"] = json!(now_s());
    out["redirect_uris"] = json!(reg.redirect_uris);
    out["application_type"] = json!(reg.application_type);
    out["token_endpoint_auth_method"] = json!(reg.token_endpoint_auth_method);
    if let Some(name) = reg.client_name {
        out["client_name"] = json!(name);
    }
    if let Some(s) = secret {
        out["client_secret"] = json!(s);
        out["client_secret_expires_at"] = json!(0);
    }
    json(StatusCode::CREATED, &out)
}

pub fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_loopback_registration_is_valid() {
        let r = validate_metadata(
            &json!({"redirect_uris": ["http://127.0.0.1:3000/cb"], "application_type": "native",
                    "client_name": "x", "token_endpoint_auth_method": "none"}),
            &[],
        )
        .unwrap();
        assert_eq!(r.application_type, "native");
        assert_eq!(r.token_endpoint_auth_method, "none");
        assert!(r.all_loopback);
    }

    #[test]
    fn application_type_is_inferred_when_absent() {
        let allow = vec!["https://vscode.dev/redirect".to_string()];
        let r =
            validate_metadata(&json!({"redirect_uris": ["http://localhost/cb"]}), &allow).unwrap();
        assert_eq!(r.application_type, "native");
        let r = validate_metadata(
            &json!({"redirect_uris": ["https://vscode.dev/redirect"]}),
            &allow,
        )
        .unwrap();
        assert_eq!(r.application_type, "web");
    }

    #[test]
    fn web_clients_cannot_use_loopback() {
        let (code, d) = validate_metadata(
            &json!({"redirect_uris": ["http://127.0.0.1/cb"], "application_type": "web"}),
            &[],
        )
        .unwrap_err();
        assert_eq!(code, "invalid_redirect_uri");
        assert!(d.contains("native"), "{d}");
    }

    #[test]
    fn bad_metadata_is_refused_with_the_right_code() {
        let cases = [
            (json!({}), "invalid_redirect_uri"),
            (
                json!({"redirect_uris": ["https://evil.example/cb"]}),
                "invalid_redirect_uri",
            ),
            (
                json!({"redirect_uris": ["http://127.0.0.1/cb"], "application_type": "tv"}),
                "invalid_client_metadata",
            ),
            (
                json!({"redirect_uris": ["http://127.0.0.1/cb"], "grant_types": ["client_credentials"]}),
                "invalid_client_metadata",
            ),
            (
                json!({"redirect_uris": ["http://127.0.0.1/cb"], "token_endpoint_auth_method": "private_key_jwt"}),
                "invalid_client_metadata",
            ),
            (
                json!({"redirect_uris": "http://127.0.0.1/cb"}),
                "invalid_client_metadata",
            ),
            (json!([1]), "invalid_client_metadata"),
        ];
        for (body, want) in cases {
            let (code, _) = validate_metadata(&body, &[]).unwrap_err();
            assert_eq!(code, want, "{body}");
        }
    }
}
