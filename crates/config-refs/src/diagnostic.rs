//! The one shape of a configuration mistake, shared by the gateway and the sidecar:
//! `path:line: `key`: message`, and for a conflict (two backends with one name) a
//! second line pointing at the other place.
//!
//! Validation collects every mistake of a file into [`Diagnostics`] instead of stopping
//! at the first, so that one run of the binary shows all there is to fix. Which keys
//! exist and what their messages say is each binary's business.

use std::fmt;

/// One mistake, at the line of a key (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub path: String,
    pub line: usize,
    pub key: String,
    pub message: String,
    /// The other side of a conflict: its line and what is there.
    pub related: Option<(usize, String)>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: `{}`: {}",
            self.path, self.line, self.key, self.message
        )?;
        if let Some((line, note)) = &self.related {
            write!(f, "\n{}:{}: `{}`: {}", self.path, line, self.key, note)?;
        }
        Ok(())
    }
}

/// Every mistake of one file, in the order found (at least one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.len() > 1 {
            writeln!(f, "{} mistakes in the configuration:", self.0.len())?;
        }
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

/// A mistake that is already in a validator's list of [`Diagnostic`]s: what a check
/// returns instead of a value, so that `?` still skips what depends on the value while
/// validation goes on elsewhere. The list decides the outcome, not this marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reported;

/// The result of one check of a configuration value.
pub type Checked<T> = Result<T, Reported>;

/// The 1-based line of a byte offset of `text`.
pub fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())]
        .bytes()
        .filter(|b| *b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_conflict_prints_both_lines_and_several_mistakes_are_counted() {
        let d = |line, related| Diagnostic {
            path: "c.toml".into(),
            line,
            key: "backend.name".into(),
            message: "duplicate".into(),
            related,
        };
        let one = Diagnostics(vec![d(9, Some((5, "first here".into())))]);
        assert_eq!(
            one.to_string(),
            "c.toml:9: `backend.name`: duplicate\nc.toml:5: `backend.name`: first here"
        );
        let two = Diagnostics(vec![d(2, None), d(3, None)]);
        assert!(two.to_string().starts_with("2 mistakes"), "{two}");
        assert_eq!(line_of("a\nb\nc", 4), 3);
    }
}
