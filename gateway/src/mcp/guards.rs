//! Checks every request passes before it is served: `Host` and `Origin` (DNS rebinding),
//! `Accept` and `Content-Type`; their refusals are one type, [`GuardRefusal`].
//!
//! Not here: identity and policy (the proxy adapter and [`crate::auth`]).

use super::exchange::Response;
use super::handler::Gateway;
use super::jsonrpc::{self};
use http::HeaderMap;

/// Why a request to `/mcp` is refused before any JSON-RPC is read: one type for the
/// transport's refusals, each with its HTTP status, JSON-RPC code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuardRefusal {
    /// 403: the `Host` header (lower-cased, port kept) is not in `server.allowed_hosts`.
    Host(String),
    /// 403: the `Origin` header (lower-cased, no trailing `/`) is not allowed.
    Origin(String),
    /// 405: not POST, GET or DELETE.
    Method,
    /// 415: a POST whose `Content-Type` is not `application/json`.
    ContentType,
    /// 406: a POST whose `Accept` does not list both JSON and SSE.
    AcceptPost,
    /// 406: a GET whose `Accept` does not include `text/event-stream`.
    AcceptStream,
}

impl GuardRefusal {
    pub fn status(&self) -> u16 {
        match self {
            GuardRefusal::Host(_) | GuardRefusal::Origin(_) => 403,
            GuardRefusal::Method => 405,
            GuardRefusal::ContentType => 415,
            GuardRefusal::AcceptPost | GuardRefusal::AcceptStream => 406,
        }
    }

    pub fn code(&self) -> i64 {
        jsonrpc::INVALID_REQUEST
    }

    pub fn message(&self) -> String {
        match self {
            GuardRefusal::Host(host) => {
                format!("Forbidden: Host {host:?} is not allowed (server.allowed_hosts)")
            }
            GuardRefusal::Origin(origin) => {
                format!("Forbidden: Origin {origin:?} is not allowed (server.allowed_origins)")
            }
            GuardRefusal::Method => "Method Not Allowed: use POST, GET or DELETE".into(),
            GuardRefusal::ContentType => {
                "Unsupported Media Type: Content-Type must be application/json".into()
            }
            GuardRefusal::AcceptPost => {
                "Not Acceptable: Accept must list both application/json and text/event-stream"
                    .into()
            }
            GuardRefusal::AcceptStream => {
                "Not Acceptable: Accept must include text/event-stream".into()
            }
        }
    }

    /// The answer: a JSON-RPC error without an id (and `Allow` on a 405).
    pub fn response(&self) -> Response {
        let r = Response::refuse(self.status(), self.code(), self.message());
        match self {
            GuardRefusal::Method => r.with_header("allow", "GET, POST, DELETE".into()),
            _ => r,
        }
    }
}

impl From<GuardRefusal> for Response {
    fn from(r: GuardRefusal) -> Response {
        r.response()
    }
}

impl Gateway {
    /// Host and Origin checks against DNS rebinding.
    pub fn check_host_origin(&self, headers: &HeaderMap) -> Result<(), GuardRefusal> {
        let s = &self.config.server;
        if let Some(host) = headers.get(http::header::HOST) {
            let host = host.to_str().unwrap_or("");
            let name = host_without_port(host);
            if !s
                .allowed_hosts
                .iter()
                .any(|h| h == "*" || h.eq_ignore_ascii_case(name))
            {
                return Err(GuardRefusal::Host(host.to_ascii_lowercase()));
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
                return Err(GuardRefusal::Origin(origin));
            }
        }
        Ok(())
    }
}

/// A POST's `Content-Type` and `Accept`.
pub(super) fn check_post_headers(h: &HeaderMap) -> Result<(), GuardRefusal> {
    if !header_str(h, "content-type")
        .to_ascii_lowercase()
        .starts_with("application/json")
    {
        return Err(GuardRefusal::ContentType);
    }
    if !accepts(h, "application/json") || !accepts(h, "text/event-stream") {
        return Err(GuardRefusal::AcceptPost);
    }
    Ok(())
}

/// A GET's `Accept`.
pub(super) fn check_stream_accept(h: &HeaderMap) -> Result<(), GuardRefusal> {
    if !accepts(h, "text/event-stream") {
        return Err(GuardRefusal::AcceptStream);
    }
    Ok(())
}

pub(super) fn header_str<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// Whether the Accept header admits `mime` (`*/*` and `type/*` count).
pub(super) fn accepts(h: &HeaderMap, mime: &str) -> bool {
    let major = mime.split('/').next().unwrap_or("");
    h.get_all(http::header::ACCEPT).iter().any(|v| {
        v.to_str().unwrap_or("").split(',').any(|part| {
            let m = part.split(';').next().unwrap_or("").trim();
            let wildcard = m
                .split_once('/')
                .is_some_and(|(a, b)| b == "*" && (a == "*" || a.eq_ignore_ascii_case(major)));
            wildcard || m.eq_ignore_ascii_case(mime)
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

/// A byte string looked for in many bodies, its searcher built once (building one
/// costs more than searching a small body). Kept in a `static`.
pub(super) struct Needle {
    bytes: &'static [u8],
    finder: std::sync::OnceLock<memchr::memmem::Finder<'static>>,
}

impl Needle {
    pub(super) const fn new(bytes: &'static [u8]) -> Needle {
        Needle {
            bytes,
            finder: std::sync::OnceLock::new(),
        }
    }
}

/// True when `needle` occurs in `haystack`.
pub(super) fn contains(haystack: &[u8], needle: &Needle) -> bool {
    let finder = needle
        .finder
        .get_or_init(|| memchr::memmem::Finder::new(needle.bytes));
    finder.find(haystack).is_some()
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
        assert!(accepts(
            &headers(&[("accept", "Application/*;q=0.5, TEXT/Event-Stream")]),
            "application/json"
        ));
        assert!(accepts(
            &headers(&[("accept", "text/plain, TEXT/Event-Stream ; q=1")]),
            "text/event-stream"
        ));
        assert!(!accepts(
            &headers(&[("accept", "*/json, text/*")]),
            "application/json"
        ));
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
