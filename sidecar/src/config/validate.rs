//! Validation of the raw file into the typed [`Config`]: the [`Validator`] that knows
//! the text (for line numbers), resolves references through the workspace's one
//! expander ([`config_refs::expand_noting`]) and remembers every value read from a file
//! or a secret, so that [`super::ConfigError::scrubbed`] can keep it out of errors.
//! The top level and `[audit]` are checked here; `[server]`/`[store]`/`[rate_limit]` in
//! [`super::server`], resources, scopes, tokens and clients in [`super::access`],
//! `[google]` in [`super::google`]. Validation stops at the first error, as it always has.

use std::cell::RefCell;
use std::fmt::Display;
use std::ops::Range;
use std::str::FromStr;

use config_refs::Sources;
use mcp_audit::AuditConfig;
use toml::Spanned;

use super::raw::{Num, Number, RawConfig, Text};
use super::{line_of, Config, ConfigError};

pub(super) struct Validator<'a> {
    pub(super) text: &'a str,
    pub(super) path: &'a str,
    pub(super) sources: Sources<'a>,
    /// Values read from files and secrets, to be scrubbed from any error.
    pub(super) hidden: RefCell<Vec<String>>,
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

impl Validator<'_> {
    /// An error at the line where `span` starts.
    pub(super) fn err(
        &self,
        span: Range<usize>,
        key: &str,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_string(),
            line: line_of(self.text, span.start),
            key: key.to_string(),
            message: message.into(),
        }
    }

    fn expand_at(
        &self,
        written: &str,
        span: Range<usize>,
        key: &str,
    ) -> Result<String, ConfigError> {
        let mut hidden = self.hidden.borrow_mut();
        config_refs::expand_noting(written, &self.sources, &mut hidden)
            .map_err(|e| self.err(span, key, e.to_string()))
    }

    /// A string value with its references expanded.
    pub(super) fn string(&self, v: &Text, key: &str) -> Result<String, ConfigError> {
        self.expand_at(v.get_ref(), v.span(), key)
    }

    pub(super) fn opt(&self, v: &Option<Text>, key: &str) -> Result<Option<String>, ConfigError> {
        v.as_ref().map(|v| self.string(v, key)).transpose()
    }

    pub(super) fn or(
        &self,
        v: &Option<Text>,
        key: &str,
        default: &str,
    ) -> Result<String, ConfigError> {
        Ok(self.opt(v, key)?.unwrap_or_else(|| default.to_string()))
    }

    /// A list of strings; an error names the item (`key[i]`).
    pub(super) fn list(&self, v: &[Text], key: &str) -> Result<Vec<String>, ConfigError> {
        v.iter()
            .enumerate()
            .map(|(i, item)| self.string(item, &format!("{key}[{i}]")))
            .collect()
    }

    /// A number, written as one or as a string whose references give one.
    pub(super) fn number<T: Quantity>(
        &self,
        v: &Num,
        key: &str,
        default: T,
    ) -> Result<T, ConfigError> {
        let Some(v) = v else { return Ok(default) };
        let written = match v.get_ref() {
            Number::Int(i) => i.to_string(),
            Number::Float(f) => f.to_string(),
            Number::Text(s) => self.expand_at(s, v.span(), key)?.trim().to_string(),
        };
        written.parse::<T>().map_err(|_| {
            self.err(
                v.span(),
                key,
                format!("expected {}, found {written:?}", T::KIND),
            )
        })
    }

    /// A number within `lo ..= hi`.
    pub(super) fn in_range<T: Quantity>(
        &self,
        v: &Num,
        key: &str,
        default: T,
        (lo, hi): (T, T),
    ) -> Result<T, ConfigError> {
        let n = self.number(v, key, default)?;
        if !(lo..=hi).contains(&n) {
            let span = v.as_ref().map(Spanned::span).unwrap_or(0..0);
            return Err(self.err(span, key, format!("must be {lo} … {hi}")));
        }
        Ok(n)
    }

    /// One of a few words (the first is the default).
    pub(super) fn word<T: Copy>(
        &self,
        v: &Option<Text>,
        key: &str,
        words: &[(&str, T)],
    ) -> Result<T, ConfigError> {
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
        Err(self.err(
            v.span(),
            key,
            format!(
                "unknown variant `{shown}`, expected one of {}",
                names.join(", ")
            ),
        ))
    }

    pub(super) fn validate(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        let (server, issuer) = self.server(&raw.server)?;
        let store = self.store(&raw.store)?;
        let rate_limit = self.rate_limit(&raw.rate_limit)?;
        let resources = self.resources(&raw.resource)?;
        let authorization = self.authorization(&raw.authorization)?;
        let tokens = self.tokens(&raw.tokens)?;
        let clients = self.clients(&raw.clients)?;
        let google = self.google(&raw.google)?;
        let metrics_listen = self.metrics(&raw.metrics)?;
        let tracing = self.tracing(&raw.tracing)?;
        let audit = raw.audit.map(|a| self.audit(a)).transpose()?;
        Ok(Config {
            server,
            issuer,
            store,
            resources,
            authorization,
            tokens,
            clients,
            rate_limit,
            google,
            audit,
            metrics_listen,
            tracing,
        })
    }

    /// `[audit]`: the gateway's table, every string expanded, then checked by the
    /// audit crate. Errors point at the table.
    fn audit(&self, table: Spanned<toml::Value>) -> Result<AuditConfig, ConfigError> {
        let span = table.span();
        let mut value = table.into_inner();
        self.expand_tree(&mut value, "audit", span.clone())?;
        let audit: AuditConfig = value.try_into().map_err(|e: toml::de::Error| {
            self.err(span.clone(), "audit", e.message().trim_end())
        })?;
        audit.validate().map_err(|e| match e {
            mcp_audit::AuditError::Config { key, message } => {
                self.err(span.clone(), key.trim_matches('`'), message)
            }
            other => self.err(span.clone(), "audit", other.to_string()),
        })?;
        Ok(audit)
    }

    /// Expands the references of every string in `v`; `key` names the value in errors.
    fn expand_tree(
        &self,
        v: &mut toml::Value,
        key: &str,
        span: Range<usize>,
    ) -> Result<(), ConfigError> {
        match v {
            toml::Value::String(s) => *s = self.expand_at(s, span, key)?,
            toml::Value::Array(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    self.expand_tree(item, &format!("{key}[{i}]"), span.clone())?;
                }
            }
            toml::Value::Table(t) => {
                for (k, item) in t.iter_mut() {
                    self.expand_tree(item, &format!("{key}.{k}"), span.clone())?;
                }
            }
            _ => {}
        }
        Ok(())
    }
}
