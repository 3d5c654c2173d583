//! `[server]` (listener, issuer, abuse limits), `[store]` and `[rate_limit]`.

use toml::Spanned;
use url::Url;

use super::is_loopback_host;
use super::raw::*;
use super::typed::*;
use super::validate::Validator;
use config_refs::Checked;

impl Validator<'_> {
    /// `[server]`, and the issuer it gives (`server.issuer`, default `http://{listen}`).
    pub(super) fn server(&self, s: &RawServer) -> Checked<(ServerConfig, String)> {
        let listen = self.or(&s.listen, "server.listen", DEFAULT_LISTEN)?;
        let issuer = self.opt(&s.issuer, "server.issuer")?;
        let server = ServerConfig {
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
            body_timeout_s: self.in_range(
                &s.body_timeout_s,
                "server.body_timeout_s",
                DEFAULT_BODY_TIMEOUT_S,
                (1, 300),
            )?,
            header_timeout_s: self.in_range(
                &s.header_timeout_s,
                "server.header_timeout_s",
                DEFAULT_HEADER_TIMEOUT_S,
                (1, 300),
            )?,
            max_connections: self.in_range(
                &s.max_connections,
                "server.max_connections",
                DEFAULT_MAX_CONNECTIONS,
                (1, 1_000_000),
            )?,
            stop_delay_s: self.in_range(
                &s.stop_delay_s,
                "server.stop_delay_s",
                DEFAULT_STOP_DELAY_S,
                (0, 600),
            )?,
            drain_s: self.in_range(&s.drain_s, "server.drain_s", DEFAULT_DRAIN_S, (0, 600))?,
            listen,
            issuer,
        };
        let issuer = self.issuer(&server, s.issuer.as_ref())?;
        Ok((server, issuer))
    }

    /// The issuer: an http(s) URL without query or fragment, https unless loopback.
    fn issuer(&self, server: &ServerConfig, written: Option<&Text>) -> Checked<String> {
        let span = written.map(Spanned::span).unwrap_or(0..0);
        let issuer = server
            .issuer
            .clone()
            .unwrap_or_else(|| format!("http://{}", server.listen));
        let issuer = issuer.trim_end_matches('/').to_string();
        let parsed = Url::parse(&issuer)
            .map_err(|e| self.err(span.clone(), "server.issuer", e.to_string()))?;
        if !matches!(parsed.scheme(), "http" | "https")
            || parsed.query().is_some()
            || parsed.fragment().is_some()
        {
            return Err(self.err(
                span,
                "server.issuer",
                "must be an http(s) URL without query or fragment",
            ));
        }
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
        Ok(StoreConfig {
            url: self.string(&s.url, "store.url")?,
            schema,
            pool_size,
            cleanup_interval_s: self.in_range(
                &s.cleanup_interval_s,
                "store.cleanup_interval_s",
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
