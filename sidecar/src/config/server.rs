//! `[server]` (listener, issuer, abuse limits), `[store]` and `[rate_limit]`.

use std::str::FromStr;

use toml::Spanned;

use super::is_loopback_host;
use super::raw::*;
use super::typed::*;
use super::validate::{Unit, Validator};
use config_refs::Checked;

impl Validator<'_> {
    /// `[server]`, and the issuer it gives (`server.issuer`, default `http://{listen}`).
    pub(super) fn server(&self, s: &RawServer) -> Checked<(ServerConfig, HttpUrl)> {
        let listen = self.or(&s.listen, "server.listen", DEFAULT_LISTEN)?;
        let written = self.opt(&s.issuer, "server.issuer")?;
        let mut server = ServerConfig {
            mode: self.word(
                &s.mode,
                "server.mode",
                &[
                    ("issuer", Mode::Issuer),
                    ("google-direct", Mode::GoogleDirect),
                ],
            )?,
            client_ip_header: self.opt(&s.client_ip_header, "server.client_ip_header")?,
            max_body_bytes: self.number(
                &s.max_body_bytes,
                "server.max_body_bytes",
                DEFAULT_MAX_BODY,
            )?,
            log_format: self.word(
                &s.log_format,
                "server.log_format",
                &[("pretty", LogFormat::Pretty), ("json", LogFormat::Json)],
            )?,
            body_timeout: self.duration_in(
                &s.body_timeout_s,
                "server.body_timeout_s",
                Unit::Secs,
                DEFAULT_BODY_TIMEOUT_S,
                (1, 300),
            )?,
            header_timeout: self.duration_in(
                &s.header_timeout_s,
                "server.header_timeout_s",
                Unit::Secs,
                DEFAULT_HEADER_TIMEOUT_S,
                (1, 300),
            )?,
            keepalive_timeout: self.duration_in(
                &s.keepalive_timeout_s,
                "server.keepalive_timeout_s",
                Unit::Secs,
                DEFAULT_KEEPALIVE_TIMEOUT_S,
                (1, 4000),
            )?,
            max_connections: self.in_range(
                &s.max_connections,
                "server.max_connections",
                DEFAULT_MAX_CONNECTIONS,
                (1, 1_000_000),
            )?,
            stop_delay: self.duration_in(
                &s.stop_delay_s,
                "server.stop_delay_s",
                Unit::Secs,
                DEFAULT_STOP_DELAY_S,
                (0, 600),
            )?,
            drain: self.duration_in(
                &s.drain_s,
                "server.drain_s",
                Unit::Secs,
                DEFAULT_DRAIN_S,
                (0, 600),
            )?,
            issuer: None,
            listen,
        };
        let issuer = self.issuer(&server.listen, written.as_deref(), s.issuer.as_ref())?;
        server.issuer = written.is_some().then(|| issuer.clone());
        Ok((server, issuer))
    }

    /// The issuer (`server.issuer` as `written`, else `http://{listen}`), without a
    /// trailing `/`: an http(s) URL without query or fragment, https unless loopback.
    fn issuer(&self, listen: &str, written: Option<&str>, at: Option<&Text>) -> Checked<HttpUrl> {
        let span = at.map(Spanned::span).unwrap_or(0..0);
        let issuer = match written {
            Some(w) => w.to_string(),
            None => format!("http://{listen}"),
        };
        let issuer = match HttpUrl::parse(issuer.trim_end_matches('/')) {
            Ok(u) if u.url().query().is_none() && u.url().fragment().is_none() => u,
            Err(UrlError::Parse(e)) => {
                return Err(self.err(span, "server.issuer", e.to_string()));
            }
            _ => {
                return Err(self.err(
                    span,
                    "server.issuer",
                    "must be an http(s) URL without query or fragment",
                ))
            }
        };
        let parsed = issuer.url();
        if parsed.scheme() == "http" && !is_loopback_host(parsed.host_str().unwrap_or("")) {
            return Err(self.err(
                span,
                "server.issuer",
                "must be https unless it is a loopback address",
            ));
        }
        Ok(issuer)
    }

    pub(super) fn store(&self, s: &Spanned<RawStore>) -> Checked<StoreConfig> {
        let table = s.span();
        let s = s.get_ref();
        let schema = self.or(&s.schema, "store.schema", DEFAULT_SCHEMA)?;
        if !valid_schema_name(&schema) {
            let span = s.schema.as_ref().map(Spanned::span).unwrap_or(table);
            return Err(self.err(
                span,
                "store.schema",
                "must be 1-63 of a-z, 0-9, _ starting with a letter or _",
            ));
        }
        let pool_size = self.number(&s.pool_size, "store.pool_size", DEFAULT_POOL)?;
        if pool_size == 0 {
            let span = s.pool_size.as_ref().map(Spanned::span).unwrap_or(0..0);
            return Err(self.err(span, "store.pool_size", "must be at least 1"));
        }
        let url = self.string(&s.url, "store.url")?;
        // Parsed as the store will (a URL or `key=value` pairs); the message never
        // quotes the value, which holds a password.
        if tokio_postgres::Config::from_str(&url).is_err() {
            return Err(self.err(
                s.url.span(),
                "store.url",
                "is not a PostgreSQL connection string (postgres://user[:password]@host:port/db)",
            ));
        }
        Ok(StoreConfig {
            url,
            schema,
            pool_size,
            cleanup_interval: self.duration_in(
                &s.cleanup_interval_s,
                "store.cleanup_interval_s",
                Unit::Secs,
                DEFAULT_CLEANUP_INTERVAL_S,
                (1, 86_400),
            )?,
        })
    }

    pub(super) fn rate_limit(&self, r: &RawRateLimit) -> Checked<RateLimitConfig> {
        Ok(RateLimitConfig {
            lookups_burst: self.in_range(
                &r.lookups_burst,
                "rate_limit.lookups_burst",
                DEFAULT_LOOKUPS_BURST,
                (1, 100_000),
            )?,
            lookups_per_second: self.in_range(
                &r.lookups_per_second,
                "rate_limit.lookups_per_second",
                DEFAULT_LOOKUPS_PER_SECOND,
                (0.001, 10_000.0),
            )?,
        })
    }
}

pub(super) fn valid_schema_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}
