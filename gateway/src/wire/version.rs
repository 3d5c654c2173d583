//! Protocol revisions the gateway speaks downstream and upstream, and the two eras they
//! fall into: **legacy** revisions open a session with `initialize`; **modern** ones
//! (2026-07-28 on) are stateless and carry their revision in every request's `_meta`.

/// Legacy (initialize-based) revisions, oldest first. The last one is preferred.
pub const SUPPORTED: &[&str] = &["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"];

/// Modern (stateless) revisions, oldest first.
pub const MODERN: &[&str] = &["2026-07-28"];

/// The revision the gateway proposes when a client asks for one it does not know.
pub const LATEST: &str = "2025-11-25";

/// The modern revision the gateway speaks to modern clients and backends.
pub const MODERN_LATEST: &str = "2026-07-28";

/// Assumed when a request carries no `MCP-Protocol-Version` header and nothing else says.
pub const DEFAULT_WITHOUT_HEADER: &str = "2025-03-26";

/// Which family a revision belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Era {
    /// `initialize`, sessions, server-to-client requests.
    Legacy,
    /// Stateless: per-request `_meta`, `server/discover`, input-required results.
    Modern,
}

impl Era {
    /// The era of a revision string; `None` for one the gateway does not speak.
    pub fn of(v: &str) -> Option<Era> {
        if SUPPORTED.contains(&v) {
            Some(Era::Legacy)
        } else if MODERN.contains(&v) {
            Some(Era::Modern)
        } else {
            None
        }
    }
}

/// Whether `v` is a legacy revision the gateway speaks.
pub fn is_supported(v: &str) -> bool {
    SUPPORTED.contains(&v)
}

/// Whether `v` is a modern (stateless) revision the gateway speaks.
pub fn is_modern(v: &str) -> bool {
    modern(v).is_some()
}

/// The modern revision `v` names, as the gateway's own constant.
pub fn modern(v: &str) -> Option<&'static str> {
    MODERN.iter().copied().find(|m| *m == v)
}

/// Picks the revision to answer an `initialize` with: the client's when supported,
/// otherwise our latest (the client then decides whether it can continue).
pub fn negotiate(requested: Option<&str>) -> &'static str {
    requested
        .and_then(|r| SUPPORTED.iter().copied().find(|s| *s == r))
        .unwrap_or(LATEST)
}

/// The legacy revision to open an upstream session with on behalf of a client speaking
/// `downstream` (a modern client's calls reach a legacy backend in its latest revision).
pub fn upstream_legacy(downstream: &str) -> &str {
    if is_supported(downstream) {
        downstream
    } else {
        LATEST
    }
}

/// JSON-RPC batches were removed in 2025-06-18.
pub fn allows_batches(v: &str) -> bool {
    v < "2025-06-18"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation() {
        assert_eq!(negotiate(Some("2025-06-18")), "2025-06-18");
        assert_eq!(negotiate(Some("2099-01-01")), LATEST);
        assert_eq!(negotiate(Some("2026-07-28")), LATEST);
        assert_eq!(negotiate(None), LATEST);
        assert!(allows_batches("2025-03-26"));
        assert!(!allows_batches("2025-06-18"));
        assert!(!allows_batches("2025-11-25"));
    }

    #[test]
    fn eras() {
        assert_eq!(Era::of("2025-11-25"), Some(Era::Legacy));
        assert_eq!(Era::of("2026-07-28"), Some(Era::Modern));
        assert_eq!(Era::of("v999.0.0"), None);
        assert_eq!(modern("2026-07-28"), Some(MODERN_LATEST));
        assert_eq!(modern("2025-11-25"), None);
        assert_eq!(upstream_legacy("2026-07-28"), LATEST);
        assert_eq!(upstream_legacy("2025-06-18"), "2025-06-18");
    }
}
