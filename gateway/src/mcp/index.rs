//! Where a public name or a resource URI leads: indexes built from the lists the
//! gateway merged, shared by all sessions of a process.

use dashmap::DashMap;

/// Prefix of the resource URI form used when two backends publish the same URI:
/// `mcpgw://{backend}/{original uri}`.
pub const RESOURCE_PREFIX: &str = "mcpgw://";

#[derive(Default)]
pub struct Index {
    /// Shortened public tool/prompt names → (backend index, original name).
    pub names: DashMap<String, (usize, String)>,
    /// Resource URI → backend index (first backend in config order that listed it).
    pub resources: DashMap<String, usize>,
    /// URI template → backend index.
    pub templates: DashMap<String, usize>,
}

impl Index {
    /// Finds the backend of a resource URI through the index and the templates.
    pub fn resource_backend(&self, uri: &str) -> Option<usize> {
        if let Some(b) = self.resources.get(uri) {
            return Some(*b);
        }
        self.templates
            .iter()
            .find(|e| template_matches(e.key(), uri))
            .map(|e| *e.value())
    }
}

/// Splits the collision form `mcpgw://{backend}/{uri}`.
pub fn split_prefixed_uri(uri: &str) -> Option<(&str, &str)> {
    uri.strip_prefix(RESOURCE_PREFIX)?.split_once('/')
}

/// Whether `uri` matches an RFC 6570 template (simple, `+`, `/`, `#` and `.` forms),
/// with each expression matching at least one character.
pub fn template_matches(template: &str, uri: &str) -> bool {
    // Split into literal and expression parts.
    let mut parts: Vec<(bool, &str)> = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        if start > 0 {
            parts.push((false, &rest[..start]));
        }
        let Some(end) = rest[start..].find('}') else {
            return false;
        };
        parts.push((true, &rest[start + 1..start + end]));
        rest = &rest[start + end + 1..];
    }
    if !rest.is_empty() {
        parts.push((false, rest));
    }
    matches_from(&parts, uri)
}

fn matches_from(parts: &[(bool, &str)], s: &str) -> bool {
    match parts.split_first() {
        None => s.is_empty(),
        Some(((false, lit), tail)) => s
            .strip_prefix(lit)
            .is_some_and(|after| matches_from(tail, after)),
        Some(((true, expr), tail)) => {
            let allows_slash =
                expr.starts_with('+') || expr.starts_with('#') || expr.starts_with('/');
            for (i, c) in s.char_indices() {
                if c == '/' && !allows_slash {
                    break;
                }
                let end = i + c.len_utf8();
                if matches_from(tail, &s[end..]) {
                    return true;
                }
            }
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates() {
        assert!(template_matches(
            "test://template/{id}/data",
            "test://template/42/data"
        ));
        assert!(!template_matches(
            "test://template/{id}/data",
            "test://template//data"
        ));
        assert!(!template_matches(
            "test://template/{id}/data",
            "test://template/4/2/data"
        ));
        assert!(template_matches("file:///{+path}", "file:///a/b/c"));
        assert!(!template_matches("x://{a}", "y://b"));
    }

    #[test]
    fn prefixed_uri() {
        assert_eq!(
            split_prefixed_uri("mcpgw://b/test://x"),
            Some(("b", "test://x"))
        );
        assert_eq!(split_prefixed_uri("test://x"), None);
    }
}
