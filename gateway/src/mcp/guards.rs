//! Checks every request passes before it is served: `Host` and `Origin` (DNS rebinding),
//! `Accept` and `Content-Type`.
//!
//! Not here: identity and policy (the proxy adapter and [`crate::auth`]).

use super::exchange::Response;
use super::handler::Gateway;
use super::jsonrpc::{self};
use http::HeaderMap;

impl Gateway {
    /// Host and Origin checks against DNS rebinding; `Err` carries the 403.
    pub fn check_host_origin(&self, headers: &HeaderMap) -> Result<(), Response> {
        let s = &self.config.server;
        if let Some(host) = headers.get(http::header::HOST) {
            let host = host.to_str().unwrap_or("").to_ascii_lowercase();
            let name = host_without_port(&host);
            if !s.allowed_hosts.iter().any(|h| h == "*" || h == name) {
                return Err(Response::refuse(
                    403,
                    jsonrpc::INVALID_REQUEST,
                    format!("Forbidden: Host {host:?} is not allowed (server.allowed_hosts)"),
                ));
            }
        }
        if let Some(origin) = headers.get(http::header::ORIGIN) {
            let origin = origin
                .to_str()
                .unwrap_or("")
                .trim_end_matches('/')
                .to_ascii_lowercase();
            let ok = s.allowed_origins.iter().any(|o| o == "*" || *o == origin)
                || (s.allow_loopback_origins && is_loopback_origin(&origin));
            if !ok {
                return Err(Response::refuse(
                    403,
                    jsonrpc::INVALID_REQUEST,
                    format!("Forbidden: Origin {origin:?} is not allowed (server.allowed_origins)"),
                ));
            }
        }
        Ok(())
    }
}

pub(super) fn header_str<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// Whether the Accept header admits `mime` (`*/*` and `type/*` count).
pub(super) fn accepts(h: &HeaderMap, mime: &str) -> bool {
    let major = mime.split('/').next().unwrap_or("");
    h.get_all(http::header::ACCEPT).iter().any(|v| {
        v.to_str().unwrap_or("").split(',').any(|part| {
            let m = part
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            m == mime || m == "*/*" || m == format!("{major}/*")
        })
    })
}

pub(super) fn host_without_port(host: &str) -> &str {
    if host.starts_with('[') {
        match host.find(']') {
            Some(i) => &host[..=i],
            None => host,
        }
    } else {
        host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host)
    }
}

pub(super) fn is_loopback_origin(origin: &str) -> bool {
    let Some(rest) = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
    else {
        return false;
    };
    matches!(host_without_port(rest), "localhost" | "127.0.0.1" | "[::1]")
}

/// True when `needle` occurs in `haystack`.
pub(super) fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn accept_matching() {
        assert!(accepts(
            &headers(&[("accept", "application/json, text/event-stream")]),
            "text/event-stream"
        ));
        assert!(accepts(&headers(&[("accept", "*/*")]), "application/json"));
        assert!(!accepts(
            &headers(&[("accept", "application/json")]),
            "text/event-stream"
        ));
        assert!(!accepts(&headers(&[]), "application/json"));
    }

    #[test]
    fn host_parsing() {
        assert_eq!(host_without_port("localhost:8080"), "localhost");
        assert_eq!(host_without_port("[::1]:80"), "[::1]");
        assert_eq!(host_without_port("example.com"), "example.com");
        assert!(is_loopback_origin("http://localhost:3000"));
        assert!(!is_loopback_origin("http://evil.example.com"));
        assert!(!is_loopback_origin("null"));
    }
}
