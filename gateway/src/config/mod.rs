//! Typed, validated gateway configuration (TOML).
//!
//! Loading happens in two steps: the file is parsed into the raw `File*` structs
//! (unknown keys are an error, with the line), then validated into [`Config`], the one
//! internal shape the rest of the gateway reads. Values may reference the environment
//! with `${env:NAME}`, files with `${file:PATH}` and AWS Secrets Manager with
//! `${secret:NAME}` (the `config-refs` crate); a missing one is an error naming the key.
//!
//! - [`raw`]: the file as written (serde, spans);
//! - [`validate`], [`server`], [`backend`]: validation, each error with the file, line
//!   and key at fault; every mistake of the file is reported, not only the first;
//! - [`typed`]: the result, re-exported here.

mod backend;
mod raw;
mod server;
mod telemetry;
pub mod typed;
mod validate;

pub use typed::*;

use std::net::SocketAddr;
use std::path::Path;
use thiserror::Error;

use raw::FileConfig;
use validate::Validator;

/// A configuration mistake, reported with the file, line and key at fault.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    /// Every mistake of the file (validation does not stop at the first), each
    /// `path:line: key: message`.
    #[error("{0}")]
    Invalid(config_refs::Diagnostics),
}

#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub auth: AuthConfig,
    /// Admin listener serving Prometheus metrics, if any.
    pub metrics_listen: Option<SocketAddr>,
    /// OpenTelemetry export (`[tracing]`), before the `OTEL_*` variables are read.
    pub tracing: mcp_telemetry::TraceSettings,
    /// The audit log (`[audit]`), with references resolved.
    pub audit: crate::audit::AuditConfig,
    /// Enabled backends, in file order (which is also the merge order of lists).
    pub backends: Vec<BackendConfig>,
}

impl Config {
    /// Listeners configured on port 0 get a free port now, so that it can be announced
    /// ("listening on …", which tests read back); a `public_url` on port 0 follows the
    /// listener, and with it the default audience.
    pub fn take_ephemeral_ports(&mut self) -> std::io::Result<()> {
        if let Some(addr) = self.metrics_listen.filter(|a| a.port() == 0) {
            self.metrics_listen = Some(hold_free_port(addr)?);
        }
        if self.server.listen.port() == 0 {
            self.server.listen = hold_free_port(self.server.listen)?;
            if self.server.public_url.port() == Some(0) {
                let old_audience = format!(
                    "{}/mcp",
                    self.server.public_url.as_str().trim_end_matches('/')
                );
                let _ = self
                    .server
                    .public_url
                    .set_port(Some(self.server.listen.port()));
                if self.auth.audience == old_audience {
                    self.auth.audience = format!(
                        "{}/mcp",
                        self.server.public_url.as_str().trim_end_matches('/')
                    );
                }
            }
        }
        Ok(())
    }

    /// Reads the file's text (to find its `${secret:..}` references before loading).
    pub fn read(path: &Path) -> Result<String, ConfigError> {
        std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })
    }

    /// Loads a config file; `${secret:..}` references are resolved by `secrets`.
    pub fn load(
        path: &Path,
        secrets: Option<&crate::secrets::SecretStore>,
    ) -> Result<Config, ConfigError> {
        let text = Self::read(path)?;
        let env = |name: &str| std::env::var(name).ok();
        let secret = |reference: &str| -> Result<String, String> {
            match secrets {
                Some(s) => s.resolve(reference).map_err(|e| e.to_string()),
                None => Err("no secret store (AWS Secrets Manager) is configured".into()),
            }
        };
        Self::parse_with(&text, &path.display().to_string(), &env, &secret)
    }

    /// Parses and validates config text. `env` resolves `${env:NAME}` references;
    /// `${secret:..}` references are an error.
    pub fn parse(
        text: &str,
        path: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        Self::parse_with(text, path, env, &|_| {
            Err("no secret store (AWS Secrets Manager) is configured".into())
        })
    }

    /// Parses and validates config text with both kinds of references.
    pub fn parse_with(
        text: &str,
        path: &str,
        env: &dyn Fn(&str) -> Option<String>,
        secret: &dyn Fn(&str) -> Result<String, String>,
    ) -> Result<Config, ConfigError> {
        let file: FileConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_string(),
            message: describe_toml_error(text, &e),
        })?;
        let validator = Validator {
            text,
            path,
            env,
            secret,
            found: Default::default(),
        };
        let result = validator.validate(file);
        let found = validator.found.into_inner();
        match result {
            Ok(config) if found.is_empty() => Ok(config),
            _ => Err(ConfigError::Invalid(config_refs::Diagnostics(found))),
        }
    }
}

fn describe_toml_error(text: &str, e: &toml::de::Error) -> String {
    match e.span() {
        Some(span) => format!(
            "line {}: {}",
            line_of(text, span.start),
            e.message().trim_end()
        ),
        None => e.message().trim_end().to_string(),
    }
}

use config_refs::line_of;

/// What an error may show of a value: the text as written when it holds a reference
/// (the resolved value may be a secret), else the value.
fn shown<'a>(written: &'a toml::Spanned<String>, resolved: &'a str) -> &'a str {
    if written.get_ref().contains("${") {
        written.get_ref()
    } else {
        resolved
    }
}

/// A backend name becomes the `{backend}__` prefix of tool names, so it is restricted to
/// characters valid in tool names and may not itself contain the separator.
pub fn valid_backend_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        && !name.contains("__")
        && !name.ends_with('_')
}

/// Expands `${env:NAME}`, `${file:PATH}`, `${secret:NAME}` and `${secret:NAME#json_key}`
/// references (the workspace's one expander, [`config_refs::expand`]). Unknown reference
/// kinds, unset variables, unreadable files and unknown secrets are errors (the message
/// never contains a resolved value).
pub fn expand_refs(
    value: &str,
    env: &dyn Fn(&str) -> Option<String>,
    secret: &dyn Fn(&str) -> Result<String, String>,
) -> Result<String, String> {
    config_refs::expand(value, &config_refs::Sources { env, secret }).map_err(|e| e.to_string())
}

fn decode_key(raw: &str) -> Result<[u8; 32], String> {
    use base64::Engine;
    let bytes = if raw.len() == 64 && raw.bytes().all(|b| b.is_ascii_hexdigit()) {
        (0..32)
            .map(|i| u8::from_str_radix(&raw[2 * i..2 * i + 2], 16))
            .collect::<Result<Vec<u8>, _>>()
            .map_err(|e| e.to_string())?
    } else {
        base64::engine::general_purpose::STANDARD
            .decode(raw.trim())
            .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(raw.trim()))
            .map_err(|_| "must be 32 bytes as 64 hex characters or base64".to_string())?
    };
    bytes
        .try_into()
        .map_err(|_| "must be exactly 32 bytes (64 hex characters or base64)".to_string())
}

#[cfg(test)]
mod tests;

/// A free port on `addr`'s address, kept bound (SO_REUSEADDR, not listening) for the
/// life of the process: the listener binds it again (Pingora sets SO_REUSEADDR too, and
/// Linux lets both bind while neither listens), and no other process's `bind(…:0)` gets
/// it in between, as it could after a probe socket was closed.
fn hold_free_port(addr: std::net::SocketAddr) -> std::io::Result<std::net::SocketAddr> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    let bound = socket
        .local_addr()?
        .as_socket()
        .ok_or_else(|| std::io::Error::other("not an IP socket"))?;
    static HELD: std::sync::Mutex<Vec<Socket>> = std::sync::Mutex::new(Vec::new());
    if let Ok(mut held) = HELD.lock() {
        held.push(socket);
    }
    Ok(bound)
}
