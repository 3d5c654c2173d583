//! `[server]` validated: addresses, the public URL, limits, timeouts, Host/Origin rules.

use super::raw::*;
use super::validate::{Checked, Reported, Validator};
use super::*;
use std::net::SocketAddr;
use std::time::Duration;
use url::Url;

impl Validator<'_> {
    /// `[server]`; `auth` is `None` when `auth.mode` is itself a mistake (then the
    /// listen address is not checked against it).
    pub(super) fn server(&self, s: &FileServer, auth: Option<AuthMode>) -> Checked<ServerConfig> {
        let listen = self.listen(s, auth);
        let public_url = match (&s.public_url, &listen) {
            (Some(v), _) => self.http_url(v, "server.public_url"),
            (None, Ok(listen)) => Url::parse(&format!("http://{listen}"))
                .map_err(|e| self.err(0..0, "server.public_url", e.to_string())),
            (None, Err(_)) => Err(Reported),
        };
        let session_key = match &s.session_key {
            None => Ok(None),
            Some(v) => self.expand(v, "server.session_key").and_then(|raw| {
                if raw.is_empty() {
                    Ok(None)
                } else {
                    decode_key(&raw)
                        .map(Some)
                        .map_err(|m| self.err(v.span(), "server.session_key", m))
                }
            }),
        };
        let log_format = match s.log_format.as_ref().map(|v| v.get_ref().as_str()) {
            None | Some("pretty") => Ok(LogFormat::Pretty),
            Some("json") => Ok(LogFormat::Json),
            Some(other) => {
                let span = s.log_format.as_ref().map(|v| v.span()).unwrap_or(0..0);
                Err(self.err(
                    span,
                    "server.log_format",
                    format!("{other:?} is not \"pretty\" or \"json\""),
                ))
            }
        };
        let limits = self.limits(s);
        let client_ip_header = match &s.client_ip_header {
            None => Ok(None),
            Some(h) => http::HeaderName::from_bytes(h.as_bytes())
                .map(Some)
                .map_err(|_| {
                    self.err(
                        0..0,
                        "server.client_ip_header",
                        format!("{h:?} is not a header name"),
                    )
                }),
        };
        let (listen, public_url) = (listen?, public_url?);
        let (max_body_bytes, body_timeout_s, max_connections) = limits?;
        let local = listen.ip().is_loopback();
        let (allowed_hosts, allowed_origins) = host_rules(s, &public_url, local);
        Ok(ServerConfig {
            listen,
            public_url,
            max_body_bytes,
            body_timeout: Duration::from_secs(body_timeout_s),
            max_connections,
            lifetimes: self.lifetimes(s)?,
            request_timeout: Duration::from_millis(
                s.request_timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS).max(1),
            ),
            stream_idle_timeout: Duration::from_millis(
                s.stream_idle_timeout_ms
                    .unwrap_or(DEFAULT_STREAM_IDLE_MS)
                    .max(1),
            ),
            session_key: session_key?,
            session_ttl: Duration::from_secs(
                s.session_ttl_s.unwrap_or(DEFAULT_SESSION_TTL_S).max(1),
            ),
            allowed_hosts,
            allowed_origins,
            allow_loopback_origins: local,
            health_interval: Duration::from_secs(
                s.health_interval_s
                    .unwrap_or(DEFAULT_HEALTH_INTERVAL_S)
                    .max(1),
            ),
            log_format: log_format?,
            secrets_refresh: Duration::from_secs(s.secrets_refresh_s.unwrap_or(300).max(1)),
            client_ip_header: client_ip_header?,
            held_calls_max: s.held_calls_max.unwrap_or(1000),
            held_call_ttl: Duration::from_secs(s.held_call_ttl_s.unwrap_or(300).max(1)),
        })
    }

    /// `server.listen`, refusing a non-loopback address without authentication.
    fn listen(&self, s: &FileServer, auth: Option<AuthMode>) -> Checked<SocketAddr> {
        let listen = match &s.listen {
            None => DEFAULT_LISTEN
                .parse::<SocketAddr>()
                .map_err(|e| self.err(0..0, "server.listen", e.to_string()))?,
            Some(v) => {
                let raw = self.expand(v, "server.listen")?;
                raw.parse::<SocketAddr>().map_err(|_| {
                    self.err(
                        v.span(),
                        "server.listen",
                        format!(
                            "{:?} is not an address like \"127.0.0.1:8080\"",
                            shown(v, &raw)
                        ),
                    )
                })?
            }
        };
        if auth == Some(AuthMode::None) && !listen.ip().is_loopback() {
            let span = s.listen.as_ref().map(|v| v.span()).unwrap_or(0..0);
            return Err(self.err(
                span,
                "server.listen",
                format!(
                    "auth.mode = \"none\" serves anyone who can connect, so it only listens on a \
                     loopback address; {listen} is not one (use 127.0.0.1 or configure auth)"
                ),
            ));
        }
        Ok(listen)
    }

    /// The body and connection limits: (max_body_bytes, body_timeout_s, max_connections).
    fn limits(&self, s: &FileServer) -> Checked<(usize, u64, usize)> {
        let max_body_bytes = s.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY);
        let body_timeout_s = s.body_timeout_s.unwrap_or(DEFAULT_BODY_TIMEOUT_S);
        let max_connections = s.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS);
        let mut failed = false;
        for (wrong, key, message) in [
            (
                max_body_bytes < 1024,
                "server.max_body_bytes",
                "must be at least 1024",
            ),
            (
                body_timeout_s == 0,
                "server.body_timeout_s",
                "must be at least 1 (seconds)",
            ),
            (
                max_connections == 0,
                "server.max_connections",
                "must be at least 1",
            ),
        ] {
            if wrong {
                self.err(0..0, key, message);
                failed = true;
            }
        }
        if failed {
            return Err(Reported);
        }
        Ok((max_body_bytes, body_timeout_s, max_connections))
    }
}

impl Validator<'_> {
    /// `keepalive_timeout_s`, `drain_s`, `stop_delay_s`.
    fn lifetimes(&self, s: &FileServer) -> Checked<Lifetimes> {
        let keepalive = s.keepalive_timeout_s.unwrap_or(DEFAULT_KEEPALIVE_TIMEOUT_S);
        let drain = s.drain_s.unwrap_or(DEFAULT_DRAIN_S);
        if keepalive == 0 {
            return Err(self.err(
                0..0,
                "server.keepalive_timeout_s",
                "must be at least 1 (seconds)",
            ));
        }
        if drain == 0 || drain > keepalive {
            return Err(self.err(
                0..0,
                "server.drain_s",
                format!(
                    "must be between 1 and server.keepalive_timeout_s ({keepalive}): it is the \
                     Keep-Alive timeout responses advertise"
                ),
            ));
        }
        Ok(Lifetimes {
            keepalive_timeout: Duration::from_secs(keepalive),
            drain: Duration::from_secs(drain),
            stop_delay: Duration::from_secs(s.stop_delay_s.unwrap_or(0)),
        })
    }
}

/// The `Host` names and `Origin`s accepted: as configured, else the public URL's (plus
/// the loopback names when listening on loopback).
fn host_rules(s: &FileServer, public_url: &Url, local: bool) -> (Vec<String>, Vec<String>) {
    let public_host = public_url
        .host_str()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let allowed_hosts = match s.allowed_hosts.clone() {
        Some(h) => h.into_iter().map(|h| h.to_ascii_lowercase()).collect(),
        None => {
            let mut v = vec![public_host];
            if local {
                for h in ["localhost", "127.0.0.1", "[::1]"] {
                    if !v.iter().any(|x| x == h) {
                        v.push(h.to_string());
                    }
                }
            }
            v
        }
    };
    let allowed_origins = match s.allowed_origins.clone() {
        Some(o) => o
            .into_iter()
            .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
            .collect(),
        None => vec![public_url
            .origin()
            .ascii_serialization()
            .to_ascii_lowercase()],
    };
    (allowed_hosts, allowed_origins)
}
