//! Validation of the raw file into the typed config: the [`Validator`] that knows the
//! text (for line numbers) and how to resolve references, the top-level and `[auth]`
//! checks. `[server]` and `[[backend]]` are in their own modules.

use super::raw::*;
use super::*;
use crate::audit::AuditConfig;
use config_refs::Diagnostic;
use std::cell::RefCell;
use std::net::SocketAddr;
use std::ops::Range;
use std::time::Duration;
use url::Url;

pub(super) struct Validator<'a> {
    pub(super) text: &'a str,
    pub(super) path: &'a str,
    pub(super) env: &'a dyn Fn(&str) -> Option<String>,
    pub(super) secret: &'a dyn Fn(&str) -> Result<String, String>,
    /// Every mistake found so far: validation goes on after one, to report them all.
    pub(super) found: RefCell<Vec<Diagnostic>>,
}

pub(super) use config_refs::{Checked, Reported};

impl Validator<'_> {
    /// Records a mistake at the line where `span` starts.
    pub(super) fn err(
        &self,
        span: Range<usize>,
        key: &str,
        message: impl Into<String>,
    ) -> Reported {
        self.record(span, key, message.into(), None)
    }

    /// Records a conflict between two places (both lines are shown).
    pub(super) fn conflict(
        &self,
        span: Range<usize>,
        key: &str,
        message: impl Into<String>,
        other: Range<usize>,
        note: impl Into<String>,
    ) -> Reported {
        let related = Some((line_of(self.text, other.start), note.into()));
        self.record(span, key, message.into(), related)
    }

    fn record(
        &self,
        span: Range<usize>,
        key: &str,
        message: String,
        related: Option<(usize, String)>,
    ) -> Reported {
        self.found.borrow_mut().push(Diagnostic {
            path: self.path.to_string(),
            line: line_of(self.text, span.start),
            key: key.to_string(),
            message,
            related,
        });
        Reported
    }

    /// Expands `${env:NAME}` references in a value.
    pub(super) fn expand(&self, value: &toml::Spanned<String>, key: &str) -> Checked<String> {
        expand_refs(value.get_ref(), self.env, self.secret)
            .map_err(|message| self.err(value.span(), key, message))
    }

    /// The whole file; every section is checked even when another has mistakes.
    pub(super) fn validate(&self, file: FileConfig) -> Checked<Config> {
        let mode = self.mode(&file.auth);
        let server = self.server(&file.server, mode.as_ref().ok().copied());
        // The rest is checked against the default `[server]` if this one has mistakes.
        let fallback;
        let server_ref = match &server {
            Ok(s) => s,
            Err(_) => {
                fallback = self.server(&FileServer::default(), None)?;
                &fallback
            }
        };
        let metrics_listen = self.metrics_listen(&file, server_ref);
        let auth = match mode {
            Ok(mode) => self.auth(file.auth, mode, server_ref),
            Err(r) => Err(r),
        };
        let backends = self.backends(file.backend, server_ref);
        let audit = self.audit(file.audit);
        let tracing = self.tracing(file.tracing);
        Ok(Config {
            server: server?,
            auth: auth?,
            metrics_listen: metrics_listen?,
            tracing: tracing?,
            audit: audit?,
            backends: backends?,
        })
    }

    fn mode(&self, a: &FileAuth) -> Checked<AuthMode> {
        match a.mode.as_ref().map(|m| m.get_ref().as_str()) {
            None | Some("none") => Ok(AuthMode::None),
            Some("oauth") => Ok(AuthMode::OAuth),
            Some("google-direct") => Ok(AuthMode::GoogleDirect),
            Some(other) => {
                let span = a.mode.as_ref().map(|m| m.span()).unwrap_or(0..0);
                Err(self.err(
                    span,
                    "auth.mode",
                    format!("unknown mode {other:?}: use \"none\", \"oauth\" or \"google-direct\""),
                ))
            }
        }
    }

    /// The enabled backends, in file order; two with one name, or two with
    /// `prefix = false`, are a conflict naming both.
    fn backends(
        &self,
        file: Vec<toml::Spanned<FileBackend>>,
        server: &ServerConfig,
    ) -> Checked<Vec<BackendConfig>> {
        let mut backends: Vec<BackendConfig> = Vec::new();
        let mut failed = false;
        // Name → span of the name, and the first unprefixed backend (name, span).
        let mut names: Vec<(String, Range<usize>)> = Vec::new();
        let mut unprefixed: Option<(String, Range<usize>)> = None;
        for spanned in file {
            let span = spanned.span();
            let b = spanned.into_inner();
            if b.enabled == Some(false) {
                continue;
            }
            let name_span = b.name.span();
            let Ok(backend) = self.backend(b, span.clone(), server) else {
                failed = true;
                continue;
            };
            if let Some((_, first)) = names.iter().find(|(n, _)| *n == backend.name) {
                self.conflict(
                    name_span.clone(),
                    "backend.name",
                    format!(
                        "duplicate backend name {:?}; every backend needs its own name",
                        backend.name
                    ),
                    first.clone(),
                    format!("the other backend named {:?}", backend.name),
                );
                failed = true;
                continue;
            }
            names.push((backend.name.clone(), name_span));
            if !backend.prefix {
                if let Some((other, other_span)) = &unprefixed {
                    self.conflict(
                        span.clone(),
                        "backend.prefix",
                        format!(
                            "backends {other:?} and {:?} both set prefix = false, so their tool \
                             and prompt names could collide; set prefix = true on one of them",
                            backend.name
                        ),
                        other_span.clone(),
                        format!("backend {other:?} sets prefix = false"),
                    );
                    failed = true;
                    continue;
                }
                unprefixed = Some((backend.name.clone(), span));
            }
            backends.push(backend);
        }
        if failed {
            return Err(Reported);
        }
        Ok(backends)
    }

    /// `metrics.listen`: an address, not the same as `server.listen`.
    fn metrics_listen(
        &self,
        file: &FileConfig,
        server: &ServerConfig,
    ) -> Checked<Option<SocketAddr>> {
        let Some(v) = &file.metrics.listen else {
            return Ok(None);
        };
        let raw = self.expand(v, "metrics.listen")?;
        let addr = raw.parse::<SocketAddr>().map_err(|_| {
            self.err(
                v.span(),
                "metrics.listen",
                format!(
                    "{:?} is not an address like \"127.0.0.1:9090\"",
                    shown(v, &raw)
                ),
            )
        })?;
        if addr == server.listen && addr.port() != 0 {
            let other = file
                .server
                .listen
                .as_ref()
                .map(|l| l.span())
                .unwrap_or(0..0);
            return Err(self.conflict(
                v.span(),
                "metrics.listen",
                format!("{addr} is also server.listen; give the metrics listener its own port"),
                other,
                format!("server.listen is {addr}"),
            ));
        }
        Ok(Some(addr))
    }

    /// `[audit]`, read key by key: references in `file`, `spool_dir` and `postgres_url`
    /// are resolved, then the audit crate checks every key; each error names its key's
    /// line (the table's for a default at fault).
    fn audit(
        &self,
        table: Option<toml::Spanned<crate::audit::SpannedTable>>,
    ) -> Checked<AuditConfig> {
        let Some(table) = table else {
            return Ok(AuditConfig::default());
        };
        let header = table.span();
        let mut table = table.into_inner();
        let mut failed = false;
        for key in ["file", "spool_dir", "postgres_url"] {
            let Some(value) = table.get_mut(key) else {
                continue;
            };
            let span = value.span();
            let toml::Value::String(written) = value.get_mut() else {
                continue;
            };
            // The URL holds a password: errors show it as written.
            match expand_refs(written, self.env, self.secret) {
                Ok(resolved) => *written = resolved,
                Err(m) => {
                    self.err(span, &format!("audit.{key}"), m);
                    failed = true;
                }
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

    pub(super) fn auth(
        &self,
        a: FileAuth,
        mode: AuthMode,
        server: &ServerConfig,
    ) -> Checked<AuthConfig> {
        let mode_span = a.mode.as_ref().map(|m| m.span()).unwrap_or(0..0);
        let issuer = match &a.issuer {
            Some(v) => self.http_url(v, "auth.issuer").map(Some),
            None if mode == AuthMode::OAuth => Err(self.err(
                mode_span.clone(),
                "auth.issuer",
                "auth.mode = \"oauth\" needs issuer = the authorization server's URL (the sidecar)",
            )),
            None if mode == AuthMode::GoogleDirect => {
                Ok(Url::parse("https://accounts.google.com").ok())
            }
            None => Ok(None),
        };
        let audience = match &a.audience {
            Some(v) => self.expand(v, "auth.audience"),
            None => Ok(format!(
                "{}/mcp",
                server.public_url.as_str().trim_end_matches('/')
            )),
        };
        let algorithms = self.algorithms(&a);
        let tokeninfo_url = self.url_or(
            &a.tokeninfo_url,
            "auth.tokeninfo_url",
            "https://oauth2.googleapis.com/tokeninfo",
        );
        let userinfo_url = self.url_or(
            &a.userinfo_url,
            "auth.userinfo_url",
            "https://openidconnect.googleapis.com/v1/userinfo",
        );
        let jwks_url = match &a.jwks_url {
            None => Ok(None),
            Some(v) => self.http_url(v, "auth.jwks_url").map(Some),
        };
        let google_client_id = match &a.google_client_id {
            Some(v) => self.expand(v, "auth.google_client_id").map(Some),
            None => Ok(None),
        };
        let allowed_domains: Vec<String> = a
            .allowed_domains
            .unwrap_or_default()
            .into_iter()
            .map(|d| d.to_ascii_lowercase())
            .collect();
        let mut google_direct = Ok(());
        if mode == AuthMode::GoogleDirect && allowed_domains.is_empty() {
            google_direct = Err(self.err(
                mode_span.clone(),
                "auth.allowed_domains",
                "auth.mode = \"google-direct\" needs allowed_domains (the Google Workspace domains whose people may sign in)",
            ));
        }
        if mode == AuthMode::GoogleDirect && a.google_client_id.is_none() {
            // Without it any Google access token would do, including one that another
            // app obtained from an employee (a confused deputy).
            google_direct = Err(self.err(
                mode_span,
                "auth.google_client_id",
                "auth.mode = \"google-direct\" needs google_client_id = the OAuth client id whose tokens the gateway accepts (the sidecar's google.client_id)",
            ));
        }
        google_direct?;
        Ok(AuthConfig {
            mode,
            issuer: issuer?,
            audience: audience?,
            algorithms: algorithms?,
            cache_ttl: Duration::from_secs(a.cache_ttl_s.unwrap_or(300).clamp(1, 300)),
            cache_max_entries: a.cache_max_entries.unwrap_or(100_000).max(1),
            clock_skew: Duration::from_secs(a.clock_skew_s.unwrap_or(60).min(300)),
            // The sidecar grants `mcp` for MCP access; a token minted for anything else
            // (a refresh with scope=offline_access) must not open /mcp. Google's tokens
            // carry Google's scopes only.
            required_scopes: a.required_scopes.unwrap_or_else(|| match mode {
                AuthMode::OAuth => vec!["mcp".to_string()],
                AuthMode::GoogleDirect | AuthMode::None => Vec::new(),
            }),
            scopes_supported: a
                .scopes_supported
                .unwrap_or_else(|| vec!["mcp".to_string()]),
            jwks_refresh_min: Duration::from_secs(a.jwks_refresh_min_s.unwrap_or(30)),
            jwks_url: jwks_url?,
            tokeninfo_url: tokeninfo_url?,
            userinfo_url: userinfo_url?,
            google_client_id: google_client_id?,
            allowed_domains,
            resource_name: a.resource_name.unwrap_or_else(|| "MCP Gateway".to_string()),
        })
    }

    /// An http(s) URL key with a default.
    fn url_or(&self, v: &Option<toml::Spanned<String>>, key: &str, default: &str) -> Checked<Url> {
        match v {
            Some(v) => self.http_url(v, key),
            None => Url::parse(default).map_err(|e| self.err(0..0, key, e.to_string())),
        }
    }

    /// `auth.algorithms`: asymmetric ones only (no `none`, no HMAC); ES256 and EdDSA by
    /// default.
    fn algorithms(&self, a: &FileAuth) -> Checked<Vec<jsonwebtoken::Algorithm>> {
        let mut algorithms = Vec::new();
        let mut failed = false;
        for alg in a.algorithms.clone().unwrap_or_default() {
            let parsed = match alg.get_ref().as_str() {
                "ES256" => jsonwebtoken::Algorithm::ES256,
                "ES384" => jsonwebtoken::Algorithm::ES384,
                "EdDSA" => jsonwebtoken::Algorithm::EdDSA,
                "RS256" => jsonwebtoken::Algorithm::RS256,
                "PS256" => jsonwebtoken::Algorithm::PS256,
                other => {
                    self.err(
                        alg.span(),
                        "auth.algorithms",
                        format!("{other:?} is not accepted; use asymmetric algorithms: ES256, ES384, EdDSA, RS256, PS256"),
                    );
                    failed = true;
                    continue;
                }
            };
            algorithms.push(parsed);
        }
        if failed {
            return Err(Reported);
        }
        if algorithms.is_empty() {
            algorithms = vec![
                jsonwebtoken::Algorithm::ES256,
                jsonwebtoken::Algorithm::EdDSA,
            ];
        }
        Ok(algorithms)
    }
}
