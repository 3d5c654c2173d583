//! Public names of tools and prompts: `{backend}__{name}`, at most 64 characters.
//!
//! A name that would be longer is shortened deterministically: the head is kept and an
//! 8-hex-digit digest of the full name is appended, so the same backend and tool always
//! give the same public name on every replica.

use sha2::{Digest, Sha256};

pub const SEPARATOR: &str = "__";
pub const MAX_LEN: usize = 64;

/// The public name of `name` from `backend` (`prefix = false` keeps the name as is).
/// Returns the name and whether it was shortened (then it can only be resolved through
/// an index built from lists).
pub fn public_name(backend: &str, prefix: bool, name: &str) -> (String, bool) {
    let full = if prefix {
        format!("{backend}{SEPARATOR}{name}")
    } else {
        name.to_string()
    };
    if full.len() <= MAX_LEN {
        return (full, false);
    }
    let digest = Sha256::digest(full.as_bytes());
    let suffix: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    // Keep a char boundary; names are usually ASCII but need not be.
    let mut cut = MAX_LEN - suffix.len() - 1;
    while !full.is_char_boundary(cut) {
        cut -= 1;
    }
    (format!("{}_{suffix}", &full[..cut]), true)
}

/// Splits `{backend}__{name}` at the first separator.
pub fn split_prefixed(public: &str) -> Option<(&str, &str)> {
    // On every routed call: a byte search, not `split_once`'s searcher set up per call.
    let bytes = public.as_bytes();
    let at = memchr::memchr_iter(b'_', bytes).find(|&i| bytes.get(i + 1) == Some(&b'_'))?;
    let (b, n) = (&public[..at], &public[at + SEPARATOR.len()..]);
    (!b.is_empty() && !n.is_empty()).then_some((b, n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_are_prefixed() {
        assert_eq!(
            public_name("grafana", true, "query"),
            ("grafana__query".into(), false)
        );
        assert_eq!(
            public_name("grafana", false, "query"),
            ("query".into(), false)
        );
        assert_eq!(split_prefixed("grafana__query"), Some(("grafana", "query")));
        assert_eq!(split_prefixed("a__b__c"), Some(("a", "b__c")));
        assert_eq!(split_prefixed("plain"), None);
        assert_eq!(split_prefixed("a_b___c_"), Some(("a_b", "_c_")));
        assert_eq!(split_prefixed("__x"), None);
        assert_eq!(split_prefixed("x__"), None);
        assert_eq!(split_prefixed("x_"), None);
        assert_eq!(split_prefixed("é__ü"), Some(("é", "ü")));
    }

    #[test]
    fn long_names_are_shortened_deterministically() {
        let long = "x".repeat(70);
        let (a, short) = public_name("backend", true, &long);
        let (b, _) = public_name("backend", true, &long);
        assert!(short);
        assert_eq!(a, b);
        assert_eq!(a.len(), MAX_LEN);
        assert!(a.starts_with("backend__xxx"));
        let (c, _) = public_name("other", true, &long);
        assert_ne!(a, c);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-'));
    }
}
