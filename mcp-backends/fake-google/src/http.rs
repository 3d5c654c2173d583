//! Small request/response helpers over hyper 1.

use std::collections::HashMap;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use http_body_util::Full;
use hyper::Response;
use serde_json::Value;

pub type Resp = Response<Full<Bytes>>;

/// A request with its body read (bounded).
pub struct Req {
    pub method: Method,
    pub path: String,
    pub query: HashMap<String, String>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Req {
    /// Form fields of an `application/x-www-form-urlencoded` body (first value wins).
    pub fn form(&self) -> HashMap<String, String> {
        parse_pairs(&self.body)
    }

    /// Form fields, or the fields of a flat JSON object body.
    pub fn form_or_json(&self) -> HashMap<String, String> {
        let is_json = self
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        if is_json {
            let mut out = HashMap::new();
            if let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(&self.body) {
                for (k, v) in map {
                    let s = match v {
                        Value::String(s) => s,
                        other => other.to_string(),
                    };
                    out.insert(k, s);
                }
            }
            out
        } else {
            self.form()
        }
    }

    pub fn bearer(&self) -> Option<&str> {
        let v = self.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
        let (scheme, token) = v.split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then_some(token.trim())
    }

    /// `Authorization: Basic` credentials, percent-decoded (RFC 6749 §2.3.1).
    pub fn basic(&self) -> Option<(String, String)> {
        use base64::Engine;
        let v = self.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
        let (scheme, b64) = v.split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return None;
        }
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .ok()?;
        let raw = String::from_utf8(raw).ok()?;
        let (id, secret) = raw.split_once(':')?;
        let dec = |s: &str| {
            url::form_urlencoded::parse(format!("x={s}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
        };
        Some((dec(id)?, dec(secret)?))
    }
}

pub fn parse_pairs(raw: &[u8]) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for (k, v) in url::form_urlencoded::parse(raw) {
        out.entry(k.into_owned()).or_insert_with(|| v.into_owned());
    }
    out
}

fn base(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

pub fn json(status: StatusCode, v: &Value) -> Resp {
    base(status, "application/json", v.to_string())
}

pub fn html(status: StatusCode, body: String) -> Resp {
    base(status, "text/html; charset=utf-8", body)
}

pub fn text(status: StatusCode, body: &str) -> Resp {
    base(status, "text/plain; charset=utf-8", body.to_string())
}

/// Google's JSON error shape for OAuth endpoints.
pub fn oauth_error(status: StatusCode, error: &str, description: &str) -> Resp {
    json(
        status,
        &serde_json::json!({"error": error, "error_description": description}),
    )
}

/// Google's JSON error shape for REST APIs (Directory, IAM).
pub fn api_error(status: StatusCode, message: &str) -> Resp {
    json(
        status,
        &serde_json::json!({"error": {"code": status.as_u16(), "message": message,
            "status": status.canonical_reason().unwrap_or("ERROR")}}),
    )
}

pub fn redirect(location: &str) -> Resp {
    let mut r = base(StatusCode::FOUND, "text/plain; charset=utf-8", Bytes::new());
    match HeaderValue::from_str(location) {
        Ok(v) => {
            r.headers_mut().insert(header::LOCATION, v);
            r
        }
        Err(_) => text(
            StatusCode::BAD_REQUEST,
            "redirect target is not a valid header",
        ),
    }
}
