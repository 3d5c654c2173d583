//! Validation of the raw file into the typed [`Config`]: the [`Validator`] that knows
//! the text (for line numbers), resolves references through the workspace's one
//! expander ([`config_refs::expand_noting`]) and remembers every value read from a file
//! or a secret, so that [`super::ConfigError::scrubbed`] can keep it out of errors.
//! The top level and `[audit]` are checked here; `[server]`/`[store]`/`[rate_limit]` in
//! [`super::server`], resources, scopes, tokens and clients in [`super::access`],
//! `[google]` in [`super::google`]. Every mistake is collected (a
//! check that fails records it and validation goes on), so one run reports them all.

use std::cell::RefCell;
use std::fmt::Display;
use std::ops::Range;
use std::str::FromStr;
use std::time::Duration;

use config_refs::Sources;
use mcp_audit::AuditConfig;
use toml::Spanned;

use super::raw::{Num, Number, RawConfig, Text};
use super::typed::{HttpUrl, UrlError};
use super::Config;
use config_refs::{line_of, Checked, Diagnostic, Reported};

pub(super) struct Validator<'a> {
    pub(super) text: &'a str,
    pub(super) path: &'a str,
    pub(super) sources: Sources<'a>,
    /// Values read from files and secrets, to be scrubbed from any error.
    pub(super) hidden: RefCell<Vec<String>>,
    /// Every mistake found so far.
    pub(super) found: RefCell<Vec<Diagnostic>>,
}

/// The numbers a config key can hold, and how an error names them.
pub(super) trait Quantity: FromStr + PartialOrd + Display + Copy {
    const KIND: &'static str;
}
impl Quantity for u32 {
    const KIND: &'static str = "a whole number";
}
impl Quantity for u64 {
    const KIND: &'static str = "a whole number";
}
impl Quantity for usize {
    const KIND: &'static str = "a whole number";
}
impl Quantity for f64 {
    const KIND: &'static str = "a number";
}

/// The unit a duration key is written in: its suffix (`_ms`, `_s`, `_days`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Unit {
    Millis,
    Secs,
    Days,
}

impl Unit {
    /// `n` of this unit.
    pub(super) fn of(self, n: u64) -> Duration {
        match self {
            Unit::Millis => Duration::from_millis(n),
            Unit::Secs => Duration::from_secs(n),
            Unit::Days => Duration::from_secs(n.saturating_mul(86_400)),
        }
    }
}

impl Validator<'_> {
    /// Records a mistake at the line where `span` starts.
    pub(super) fn err(
        &self,
        span: Range<usize>,
        key: &str,
        message: impl Into<String>,
    ) -> Reported {
        self.found.borrow_mut().push(Diagnostic {
            path: self.path.to_string(),
            line: line_of(self.text, span.start),
            key: key.to_string(),
            message: message.into(),
            related: None,
        });
        Reported
    }

    /// Records a conflict between two places (both lines are shown).
    pub(super) fn conflict(
        &self,
        (span, other): (Range<usize>, Range<usize>),
        key: &str,
        message: impl Into<String>,
        note: impl Into<String>,
    ) -> Reported {
        self.err(span, key, message);
        if let Some(d) = self.found.borrow_mut().last_mut() {
            d.related = Some((line_of(self.text, other.start), note.into()));
        }
        Reported
    }

    fn expand_at(&self, written: &str, span: Range<usize>, key: &str) -> Checked<String> {
        let mut hidden = self.hidden.borrow_mut();
        config_refs::expand_noting(written, &self.sources, &mut hidden)
            .map_err(|e| self.err(span, key, e.to_string()))
    }

    /// A string value with its references expanded.
    pub(super) fn string(&self, v: &Text, key: &str) -> Checked<String> {
        self.expand_at(v.get_ref(), v.span(), key)
    }

    pub(super) fn opt(&self, v: &Option<Text>, key: &str) -> Checked<Option<String>> {
        v.as_ref().map(|v| self.string(v, key)).transpose()
    }

    pub(super) fn or(&self, v: &Option<Text>, key: &str, default: &str) -> Checked<String> {
        Ok(self.opt(v, key)?.unwrap_or_else(|| default.to_string()))
    }

    /// A list of strings; an error names the item (`key[i]`).
    pub(super) fn list(&self, v: &[Text], key: &str) -> Checked<Vec<String>> {
        v.iter()
            .enumerate()
            .map(|(i, item)| self.string(item, &format!("{key}[{i}]")))
            .collect()
    }

    /// A number, written as one or as a string whose references give one.
    pub(super) fn number<T: Quantity>(&self, v: &Num, key: &str, default: T) -> Checked<T> {
        let Some(v) = v else { return Ok(default) };
        let written = match v.get_ref() {
            Number::Int(i) => i.to_string(),
            Number::Float(f) => f.to_string(),
            Number::Text(s) => self.expand_at(s, v.span(), key)?.trim().to_string(),
        };
        // A mistake is recorded and the default stands in, so that the keys beside it
        // are still checked.
        Ok(written.parse::<T>().unwrap_or_else(|_| {
            self.err(
                v.span(),
                key,
                format!("expected {}, found {written:?}", T::KIND),
            );
            default
        }))
    }

    /// A number within `lo ..= hi`.
    pub(super) fn in_range<T: Quantity>(
        &self,
        v: &Num,
        key: &str,
        default: T,
        (lo, hi): (T, T),
    ) -> Checked<T> {
        let n = self.number(v, key, default)?;
        if !(lo..=hi).contains(&n) {
            // Recorded; the default stands in (as in `number`).
            let span = v.as_ref().map(Spanned::span).unwrap_or(0..0);
            self.err(span, key, format!("must be {lo} … {hi}"));
            return Ok(default);
        }
        Ok(n)
    }

    /// A duration written as a whole number of `unit`s (`T` the number's type: what it
    /// may be written as), `default` in the same unit.
    pub(super) fn duration<T: Quantity + Into<u64>>(
        &self,
        v: &Num,
        key: &str,
        unit: Unit,
        default: T,
    ) -> Checked<Duration> {
        Ok(unit.of(self.number(v, key, default)?.into()))
    }

    /// A duration of `lo ..= hi` `unit`s.
    pub(super) fn duration_in(
        &self,
        v: &Num,
        key: &str,
        unit: Unit,
        default: u64,
        range: (u64, u64),
    ) -> Checked<Duration> {
        Ok(unit.of(self.in_range(v, key, default, range)?))
    }

    /// An http(s) URL ([`HttpUrl`]); a mistake is recorded at its line.
    pub(super) fn http_url(&self, v: &Text, key: &str) -> Checked<HttpUrl> {
        let text = self.string(v, key)?;
        HttpUrl::parse(&text).map_err(|e| {
            let message = match e {
                UrlError::Parse(e) => format!("must be an http(s) URL: {e}"),
                UrlError::NotHttp => e.to_string(),
            };
            self.err(v.span(), key, message)
        })
    }

    /// An optional http(s) URL.
    pub(super) fn opt_url(&self, v: &Option<Text>, key: &str) -> Checked<Option<HttpUrl>> {
        v.as_ref().map(|v| self.http_url(v, key)).transpose()
    }

    /// An http(s) URL with a default (a mistake in the default is reported at `table`).
    pub(super) fn url_or(
        &self,
        v: &Option<Text>,
        key: &str,
        default: &str,
        table: Range<usize>,
    ) -> Checked<HttpUrl> {
        match v {
            Some(v) => self.http_url(v, key),
            None => HttpUrl::parse(default).map_err(|e| self.err(table, key, e.to_string())),
        }
    }

    /// One of a few words (the first is the default).
    pub(super) fn word<T: Copy>(
        &self,
        v: &Option<Text>,
        key: &str,
        words: &[(&str, T)],
    ) -> Checked<T> {
        let Some(v) = v else { return Ok(words[0].1) };
        let resolved = self.string(v, key)?;
        if let Some((_, w)) = words.iter().find(|(name, _)| *name == resolved) {
            return Ok(*w);
        }
        // The value as written when it holds a reference (its value may be a secret).
        let shown = if v.get_ref().contains("${") {
            v.get_ref()
        } else {
            &resolved
        };
        let names: Vec<String> = words.iter().map(|(n, _)| format!("`{n}`")).collect();
        self.err(
            v.span(),
            key,
            format!(
                "unknown variant `{shown}`, expected one of {}",
                names.join(", ")
            ),
        );
        // Recorded; the default stands in (as in `number`).
        Ok(words[0].1)
    }

    /// The whole file; every table is checked even when another has mistakes.
    pub(super) fn validate(&self, raw: RawConfig) -> Checked<Config> {
        let server = self.server(&raw.server);
        let store = self.store(&raw.store);
        let rate_limit = self.rate_limit(&raw.rate_limit);
        let resources = self.resources(&raw.resource);
        let authorization = self.authorization(&raw.authorization);
        let tokens = self.tokens(&raw.tokens);
        let clients = self.clients(&raw.clients);
        let google = self.google(&raw.google);
        let metrics_listen = self.metrics(&raw.metrics);
        let tracing = self.tracing(&raw.tracing);
        let audit = raw.audit.map(|a| self.audit(a)).transpose();
        let (server, issuer) = server?;
        Ok(Config {
            server,
            issuer,
            store: store?,
            resources: resources?,
            authorization: authorization?,
            tokens: tokens?,
            clients: clients?,
            rate_limit: rate_limit?,
            google: google?,
            audit: audit?,
            metrics_listen: metrics_listen?,
            tracing: tracing?,
        })
    }

    /// `[audit]`: the gateway's table, every string expanded, then read and checked
    /// key by key by the audit crate. Each error points at its key's line (at the
    /// table's for a default at fault).
    fn audit(&self, table: Spanned<mcp_audit::SpannedTable>) -> Checked<AuditConfig> {
        let header = table.span();
        let mut table = table.into_inner();
        let mut failed = false;
        for (k, value) in table.iter_mut() {
            let span = value.span();
            if self
                .expand_tree(value.get_mut(), &format!("audit.{k}"), span)
                .is_err()
            {
                failed = true;
            }
        }
        if failed {
            return Err(Reported);
        }
        AuditConfig::from_table(&table).map_err(|problems| {
            for p in problems {
                self.err(p.span.unwrap_or(header.clone()), &p.key, p.message);
            }
            Reported
        })
    }

    /// Expands the references of every string in `v`; `key` names the value in errors.
    fn expand_tree(&self, v: &mut toml::Value, key: &str, span: Range<usize>) -> Checked<()> {
        let mut result = Ok(());
        match v {
            toml::Value::String(s) => *s = self.expand_at(s, span, key)?,
            toml::Value::Array(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    let r = self.expand_tree(item, &format!("{key}[{i}]"), span.clone());
                    result = result.and(r);
                }
            }
            toml::Value::Table(t) => {
                for (k, item) in t.iter_mut() {
                    result =
                        result.and(self.expand_tree(item, &format!("{key}.{k}"), span.clone()));
                }
            }
            _ => {}
        }
        result
    }
}
