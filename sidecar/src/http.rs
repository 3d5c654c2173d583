//! Request and response plumbing over hyper 1: parsed requests (query and form with
//! duplicate detection), cookies, the client's address, and responses that carry the
//! right security and caching headers.

use std::collections::HashMap;
use std::net::IpAddr;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use http_body_util::Full;
use hyper::Response;
use serde_json::Value;

pub type Resp = Response<Full<Bytes>>;

/// A request with its body read (bounded by `server.max_body_bytes`).
#[derive(Debug)]
pub struct Req {
    pub method: Method,
    /// Path below the issuer's base path.
    pub path: String,
    pub raw_query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The client's address (TCP peer, or the configured forwarding header).
    pub client_ip: IpAddr,
}

/// Parameters where a name given twice is an error (RFC 6749 §3.1, §3.2).
#[derive(Debug, Default, Clone)]
pub struct Params {
    map: HashMap<String, String>,
    pub duplicated: Option<String>,
}

impl Params {
    pub fn parse(raw: &[u8]) -> Params {
        let mut p = Params::default();
        for (k, v) in url::form_urlencoded::parse(raw) {
            let k = k.into_owned();
            if p.map.contains_key(&k) {
                if p.duplicated.is_none() {
                    p.duplicated = Some(k);
                }
                continue;
            }
            p.map.insert(k, v.into_owned());
        }
        p
    }

    /// The value, with an empty value treated as absent (RFC 6749 §3.1).
    pub fn get(&self, k: &str) -> Option<&str> {
        self.map
            .get(k)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }
}

impl Req {
    pub fn query(&self) -> Params {
        Params::parse(self.raw_query.as_bytes())
    }

    pub fn form(&self) -> Params {
        Params::parse(&self.body)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn user_agent(&self) -> &str {
        self.header("user-agent").unwrap_or("")
    }

    pub fn is_form(&self) -> bool {
        self.header("content-type")
            .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"))
    }

    pub fn is_json(&self) -> bool {
        self.header("content-type")
            .is_some_and(|c| c.starts_with("application/json"))
    }

    pub fn cookie(&self, name: &str) -> Option<String> {
        for v in self.headers.get_all(header::COOKIE) {
            let Ok(v) = v.to_str() else { continue };
            for pair in v.split(';') {
                if let Some((k, val)) = pair.trim().split_once('=') {
                    if k == name && !val.is_empty() {
                        return Some(val.to_string());
                    }
                }
            }
        }
        None
    }

    /// `Authorization: Basic` credentials, each part form-decoded (RFC 6749 §2.3.1).
    /// `Err` when the header is Basic but malformed.
    pub fn basic_auth(&self) -> Result<Option<(String, String)>, MalformedBasic> {
        use base64::Engine;
        let Some(v) = self.header("authorization") else {
            return Ok(None);
        };
        let Some((scheme, b64)) = v.split_once(' ') else {
            return Ok(None);
        };
        if !scheme.eq_ignore_ascii_case("basic") {
            return Ok(None);
        }
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|_| MalformedBasic)?;
        let raw = String::from_utf8(raw).map_err(|_| MalformedBasic)?;
        let (id, secret) = raw.split_once(':').ok_or(MalformedBasic)?;
        Ok(Some((form_decode(id), form_decode(secret))))
    }
}

/// An `Authorization: Basic` header that does not decode.
#[derive(Debug)]
pub struct MalformedBasic;

pub fn form_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// The client address: the last entry of `header` when configured and present.
pub fn client_ip(headers: &HeaderMap, header_name: Option<&str>, peer: IpAddr) -> IpAddr {
    let Some(name) = header_name else {
        return peer;
    };
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(peer)
}

fn base(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

/// JSON, `Cache-Control: no-store` (tokens, errors, registrations).
pub fn json(status: StatusCode, v: &Value) -> Resp {
    base(status, "application/json", v.to_string())
}

/// JSON that may be cached for `max_age` seconds (metadata, JWKS).
pub fn json_cacheable(v: &Value, max_age: u32) -> Resp {
    let mut r = base(StatusCode::OK, "application/json", v.to_string());
    if let Ok(h) = HeaderValue::from_str(&format!("public, max-age={max_age}")) {
        r.headers_mut().insert(header::CACHE_CONTROL, h);
    }
    r.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    r
}

/// An HTML page that must not be framed (clickjacking) nor run scripts.
pub fn html(status: StatusCode, body: String) -> Resp {
    let mut r = base(status, "text/html; charset=utf-8", body);
    let h = r.headers_mut();
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    r
}

pub fn text(status: StatusCode, body: &str) -> Resp {
    base(status, "text/plain; charset=utf-8", body.to_string())
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
            "redirect target is not a valid URL",
        ),
    }
}

/// An OAuth error response (RFC 6749 §5.2).
pub fn oauth_error(status: StatusCode, error: &str, description: &str) -> Resp {
    json(
        status,
        &serde_json::json!({"error": error, "error_description": description}),
    )
}

/// Adds a cookie: HttpOnly, SameSite=Lax, Path=/, Secure when `secure`.
pub fn set_cookie(r: &mut Resp, name: &str, value: &str, max_age_s: u64, secure: bool) {
    let cookie = format!(
        "{name}={value}; Path=/; Max-Age={max_age_s}; HttpOnly; SameSite=Lax{}",
        if secure { "; Secure" } else { "" }
    );
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_parameters_are_detected() {
        let p = Params::parse(b"a=1&b=2&a=3");
        assert_eq!(p.get("a"), Some("1"));
        assert_eq!(p.duplicated.as_deref(), Some("a"));
        assert!(Params::parse(b"a=1").duplicated.is_none());
    }

    #[test]
    fn empty_values_are_absent() {
        let p = Params::parse(b"state=&x=1");
        assert_eq!(p.get("state"), None);
        assert_eq!(p.get("x"), Some("1"));
    }

    #[test]
    fn client_ip_takes_the_last_forwarded_entry() {
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("1.2.3.4, 5.6.7.8"),
        );
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(
            client_ip(&h, Some("x-forwarded-for"), peer),
            "5.6.7.8".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_ip(&h, None, peer), peer);
    }
}
