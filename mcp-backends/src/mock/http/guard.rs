//! Checks made before a request is read: DNS-rebinding protection (`Host`/`Origin`)
//! and the media types of `Accept` and `Content-Type`.

use http::header::{ACCEPT, CONTENT_TYPE, HOST, ORIGIN};
use http::{HeaderMap, StatusCode};
use serde_json::Value;

use super::respond::{header_str, transport_error, Rejection};
use crate::mock::server::MockServer;

/// Whether an `Accept` header admits `wanted` (exactly, or via `type/*` or `*/*`).
pub fn accepts(headers: &HeaderMap, wanted: &str) -> bool {
    let family = wanted.split('/').next().unwrap_or(wanted);
    headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let media = item
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            media == wanted || media == "*/*" || media == format!("{family}/*")
        })
}

pub fn is_json_content(headers: &HeaderMap) -> bool {
    header_str(headers, CONTENT_TYPE.as_str())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
}

/// The host part of an authority (`host[:port]`, `[v6][:port]`).
fn host_part(authority: &str) -> &str {
    let a = authority.trim();
    if a.starts_with('[') {
        return match a.find(']') {
            Some(end) => &a[..=end],
            None => a,
        };
    }
    match a.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => a,
    }
}

fn origin_host(origin: &str) -> Option<&str> {
    let rest = origin.trim().split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    (!authority.is_empty()).then(|| host_part(authority))
}

fn host_allowed(server: &MockServer, host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    matches!(host.as_str(), "localhost" | "127.0.0.1" | "[::1]")
        || server
            .config
            .extra_allowed_hosts
            .iter()
            .any(|h| h == "*" || h.eq_ignore_ascii_case(&host))
}

/// DNS-rebinding protection: `Host` and `Origin`, when present, must name a local host.
pub fn check_host_origin(server: &MockServer, headers: &HeaderMap) -> Result<(), Rejection> {
    let forbidden = |what: &str, value: &str| {
        tracing::warn!(header = what, value, "rejected by DNS-rebinding protection");
        Err(Box::new(transport_error(
            StatusCode::FORBIDDEN,
            &Value::Null,
            format!("Forbidden: {what} '{value}' is not an allowed local host"),
        )))
    };
    if let Some(host) = headers.get(HOST) {
        let value = host.to_str().unwrap_or("");
        if !host_allowed(server, host_part(value)) {
            return forbidden("Host", value);
        }
    }
    if let Some(origin) = headers.get(ORIGIN) {
        let value = origin.to_str().unwrap_or("");
        if !origin_host(value).is_some_and(|h| host_allowed(server, h)) {
            return forbidden("Origin", value);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock::config::MockConfig;
    use http::header::HeaderValue;

    #[test]
    fn host_parsing() {
        assert_eq!(host_part("127.0.0.1:8080"), "127.0.0.1");
        assert_eq!(host_part("localhost"), "localhost");
        assert_eq!(host_part("[::1]:3000"), "[::1]");
        assert_eq!(origin_host("http://localhost:3000"), Some("localhost"));
        assert_eq!(
            origin_host("https://evil.example.com/x"),
            Some("evil.example.com")
        );
        assert_eq!(origin_host("null"), None);
    }

    #[test]
    fn host_policy() {
        let server = MockServer::new(
            MockConfig {
                extra_allowed_hosts: vec!["mock-a".into()],
                ..MockConfig::default()
            },
            None,
        );
        let mut h = HeaderMap::new();
        h.insert(HOST, HeaderValue::from_static("127.0.0.1:1234"));
        assert!(check_host_origin(&server, &h).is_ok());
        h.insert(ORIGIN, HeaderValue::from_static("http://evil.example.com"));
        assert!(check_host_origin(&server, &h).is_err());
        h.insert(ORIGIN, HeaderValue::from_static("http://[::1]:9"));
        assert!(check_host_origin(&server, &h).is_ok());
        h.insert(HOST, HeaderValue::from_static("mock-a:80"));
        assert!(check_host_origin(&server, &h).is_ok());
        h.insert(HOST, HeaderValue::from_static("evil.example.com"));
        assert!(check_host_origin(&server, &h).is_err());
    }

    #[test]
    fn accept_matching() {
        let mut h = HeaderMap::new();
        h.insert(
            ACCEPT,
            HeaderValue::from_static("application/json, text/event-stream;q=0.9"),
        );
        assert!(accepts(&h, "application/json") && accepts(&h, "text/event-stream"));
        h.insert(ACCEPT, HeaderValue::from_static("application/json"));
        assert!(!accepts(&h, "text/event-stream"));
        h.insert(ACCEPT, HeaderValue::from_static("*/*"));
        assert!(accepts(&h, "text/event-stream"));
    }
}
