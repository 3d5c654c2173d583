//! The sidecar's configuration (TOML), typed and validated.
//!
//! Loading happens in two steps, as in the gateway: the text is parsed into the raw
//! structs (unknown keys and wrong types are errors, with the line), then validated into
//! [`Config`], the one shape the rest of the sidecar reads. String values (and numbers
//! written as strings) may use `${env:NAME}` (`${env:NAME:-default}` falls back when
//! unset or empty), `${file:PATH}`, `${secret:NAME}` and `${secret:NAME#json_key}` (AWS
//! Secrets Manager through [`SecretStore`]; the expander is the workspace's one, in
//! `config-refs`). An unset variable, unreadable file or missing secret is an error
//! naming the key. Every error reads `path:line: key: message`, and never shows a value
//! read from a secret or a file (those are replaced by `***`).
//!
//! - [`raw`]: the file as written (serde, spans);
//! - [`validate`]: the validator (lines, references, scrubbing), the top level and
//!   `[audit]`; [`server`], [`access`], [`google`]: the tables;
//! - [`typed`]: the result, re-exported here: durations as `Duration`, URLs as
//!   [`HttpUrl`] (parsed and checked at start-up), closed sets of words as enums.

mod access;
mod google;
mod observe;
mod raw;
mod server;
pub mod typed;
mod validate;

pub use typed::*;

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use config_refs::{line_of, Diagnostics, SecretStore, Sources, Tables, NO_SECRET_STORE};
use url::Url;

use raw::RawConfig;
use validate::Validator;

/// The file name errors give when the text came from no file.
const UNNAMED: &str = "<config>";

/// A configuration mistake, reported with the file, line and key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// Not TOML, an unknown key, a wrong type or a missing table (`at`: `path:line`).
    #[error("{at}: {message}")]
    Parse { at: String, message: String },
    /// Every mistake of the file (validation does not stop at the first), each
    /// `path:line: key: message`.
    #[error("{0}")]
    Invalid(Diagnostics),
}

/// The configuration file when none is named: `ops/config/sidecar.$CONFIG_ENV.toml`,
/// `CONFIG_ENV` defaulting to `development` (relative to the working directory).
pub fn default_path(config_env: Option<&str>) -> PathBuf {
    let env = config_env
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .unwrap_or("development");
    PathBuf::from(format!("ops/config/sidecar.{env}.toml"))
}

/// The names of the secrets a configuration text refers to (`${secret:NAME…}` in its
/// string values; comments are not looked at).
pub fn secret_names(text: &str) -> Result<BTreeSet<String>, ConfigError> {
    secret_names_in(text, UNNAMED)
}

/// [`secret_names`] of the file at `path` (which errors name).
/// Every table counts, `enabled = false` ones too: the validator expands them all.
pub fn secret_names_in(text: &str, path: &str) -> Result<BTreeSet<String>, ConfigError> {
    let value: toml::Value = toml::from_str(text).map_err(|e| parse_error(text, path, &e))?;
    Ok(config_refs::value_references(&value, Tables::All))
}

impl Config {
    /// Reads a configuration file's text.
    pub fn read(path: &Path) -> Result<String, ConfigError> {
        std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })
    }

    /// Loads a file without a secret store (`${secret:…}` is an error).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::load_with(path, None)
    }

    /// Loads a file; `${secret:…}` references are resolved by `secrets`, which must
    /// already hold every name [`secret_names`] finds.
    pub fn load_with(path: &Path, secrets: Option<&SecretStore>) -> Result<Config, ConfigError> {
        Config::from_file_text(&Config::read(path)?, path, secrets)
    }

    /// [`Config::load_with`] of text already read from `path` (which errors name).
    pub fn from_file_text(
        text: &str,
        path: &Path,
        secrets: Option<&SecretStore>,
    ) -> Result<Config, ConfigError> {
        let secret = |reference: &str| -> Result<String, String> {
            match secrets {
                Some(s) => s.resolve(reference).map_err(|e| e.to_string()),
                None => Err(NO_SECRET_STORE.into()),
            }
        };
        let env = |n: &str| std::env::var(n).ok();
        Config::parse_named(text, &path.display().to_string(), &env, &secret)
    }

    /// Parses config text; `${secret:…}` references are an error.
    pub fn parse(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        Config::parse_with(text, env, &|_| Err(NO_SECRET_STORE.into()))
    }

    /// Parses config text, `secret` resolving `NAME` or `NAME#json_key`. An error never
    /// contains a value that came from a secret or a file.
    pub fn parse_with(
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
        secret: &dyn Fn(&str) -> Result<String, String>,
    ) -> Result<Config, ConfigError> {
        Config::parse_named(text, UNNAMED, env, secret)
    }

    /// [`Config::parse_with`] of the text of the file `path` (which errors name).
    pub fn parse_named(
        text: &str,
        path: &str,
        env: &dyn Fn(&str) -> Option<String>,
        secret: &dyn Fn(&str) -> Result<String, String>,
    ) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| parse_error(text, path, &e))?;
        let validator = Validator {
            text,
            path,
            sources: Sources { env, secret },
            hidden: RefCell::new(Vec::new()),
            found: RefCell::new(Vec::new()),
        };
        let result = validator.validate(raw);
        let found = validator.found.into_inner();
        match result {
            Ok(config) if found.is_empty() => Ok(config),
            _ => Err(ConfigError::Invalid(Diagnostics(found)).scrubbed(&validator.hidden.borrow())),
        }
    }

    /// The configured resource a requested `resource` names: scheme and host compared
    /// case-insensitively, default ports elided, a trailing `/` ignored.
    pub fn find_resource(&self, requested: &str) -> Option<&Resource> {
        let req = Url::parse(requested).ok()?;
        if req.fragment().is_some() {
            return None;
        }
        self.resources
            .iter()
            .find(|r| same_resource(r.url.url(), &req))
    }
}

fn same_resource(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str().map(str::to_ascii_lowercase) == b.host_str().map(str::to_ascii_lowercase)
        && a.port_or_known_default() == b.port_or_known_default()
        && a.path().trim_end_matches('/') == b.path().trim_end_matches('/')
        && a.query() == b.query()
}

pub fn is_loopback_host(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost")
        || h.parse::<std::net::IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

/// A TOML or serde error as `path:line: message` (the text is as written: no
/// reference has been resolved yet).
fn parse_error(text: &str, path: &str, e: &toml::de::Error) -> ConfigError {
    let at = match e.span() {
        Some(span) => format!("{path}:{}", line_of(text, span.start)),
        None => path.to_string(),
    };
    ConfigError::Parse {
        at,
        message: e.message().trim_end().to_string(),
    }
}

impl ConfigError {
    /// The same error with every value of `hidden` replaced by `***`.
    fn scrubbed(self, hidden: &[String]) -> ConfigError {
        let scrub = |m: String| {
            let mut m = m;
            for h in hidden {
                // Short values (a port, `true`) would only mangle the message; they are
                // not secrets worth the name.
                if h.len() >= 4 && m.contains(h.as_str()) {
                    m = m.replace(h.as_str(), "***");
                }
                // A multi-line value (a PEM key) may be quoted line by line.
                for line in h.lines().map(str::trim).filter(|l| l.len() >= 8) {
                    if m.contains(line) {
                        m = m.replace(line, "***");
                    }
                }
            }
            m
        };
        match self {
            ConfigError::Read { .. } => self,
            ConfigError::Parse { at, message } => ConfigError::Parse {
                at,
                message: scrub(message),
            },
            ConfigError::Invalid(Diagnostics(found)) => ConfigError::Invalid(Diagnostics(
                found
                    .into_iter()
                    .map(|d| config_refs::Diagnostic {
                        message: scrub(d.message),
                        related: d.related.map(|(line, note)| (line, scrub(note))),
                        ..d
                    })
                    .collect(),
            )),
        }
    }
}

#[cfg(test)]
mod tests;
