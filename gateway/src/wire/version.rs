//! Protocol revisions the gateway speaks downstream and upstream.

/// Supported revisions, oldest first. The last one is preferred.
pub const SUPPORTED: &[&str] = &["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"];

/// The revision the gateway proposes when a client asks for one it does not know.
pub const LATEST: &str = "2025-11-25";

/// Assumed when a request carries no `MCP-Protocol-Version` header and nothing else says.
pub const DEFAULT_WITHOUT_HEADER: &str = "2025-03-26";

pub fn is_supported(v: &str) -> bool {
    SUPPORTED.contains(&v)
}

/// Picks the revision to answer an `initialize` with: the client's when supported,
/// otherwise our latest (the client then decides whether it can continue).
pub fn negotiate(requested: Option<&str>) -> &'static str {
    requested
        .and_then(|r| SUPPORTED.iter().copied().find(|s| *s == r))
        .unwrap_or(LATEST)
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
        assert_eq!(negotiate(None), LATEST);
        assert!(allows_batches("2025-03-26"));
        assert!(!allows_batches("2025-06-18"));
        assert!(!allows_batches("2025-11-25"));
    }
}
