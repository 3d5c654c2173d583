//! Validation of the raw file into the typed config: the [`Validator`] that knows the
//! text (for line numbers) and how to resolve references, the top-level and `[auth]`
//! checks. `[server]` and `[[backend]]` are in their own modules.

use super::raw::*;
use super::*;
use std::net::SocketAddr;
use std::ops::Range;
use std::time::Duration;
use url::Url;

pub(super) struct Validator<'a> {
    pub(super) text: &'a str,
    pub(super) path: &'a str,
    pub(super) env: &'a dyn Fn(&str) -> Option<String>,
    pub(super) secret: &'a dyn Fn(&str) -> Result<String, String>,
}

impl Validator<'_> {
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

    /// Expands `${env:NAME}` references in a value.
    pub(super) fn expand(
        &self,
        value: &toml::Spanned<String>,
        key: &str,
    ) -> Result<String, ConfigError> {
        expand_refs(value.get_ref(), self.env, self.secret)
            .map_err(|message| self.err(value.span(), key, message))
    }

    pub(super) fn validate(&self, file: FileConfig) -> Result<Config, ConfigError> {
        let mode = match file.auth.mode.as_ref().map(|m| m.get_ref().as_str()) {
            None | Some("none") => AuthMode::None,
            Some("oauth") => AuthMode::OAuth,
            Some("google-direct") => AuthMode::GoogleDirect,
            Some(other) => {
                let span = file.auth.mode.as_ref().map(|m| m.span()).unwrap_or(0..0);
                return Err(self.err(
                    span,
                    "auth.mode",
                    format!("unknown mode {other:?}: use \"none\", \"oauth\" or \"google-direct\""),
                ));
            }
        };
        let server = self.server(file.server, mode)?;
        let auth = self.auth(file.auth, mode, &server)?;
        let mut backends: Vec<BackendConfig> = Vec::new();
        let mut unprefixed: Option<String> = None;
        for spanned in file.backend {
            let span = spanned.span();
            let b = spanned.into_inner();
            if b.enabled == Some(false) {
                continue;
            }
            let backend = self.backend(b, span.clone(), &server)?;
            if backends.iter().any(|o| o.name == backend.name) {
                return Err(self.err(
                    span,
                    "backend.name",
                    format!("duplicate backend name {:?}", backend.name),
                ));
            }
            if !backend.prefix {
                if let Some(other) = &unprefixed {
                    return Err(self.err(
                        span,
                        "backend.prefix",
                        format!(
                            "backends {other:?} and {:?} both set prefix = false, so their tool \
                             and prompt names could collide; set prefix = true on one of them",
                            backend.name
                        ),
                    ));
                }
                unprefixed = Some(backend.name.clone());
            }
            backends.push(backend);
        }
        let metrics_listen = match &file.metrics.listen {
            None => None,
            Some(v) => {
                let raw = self.expand(v, "metrics.listen")?;
                Some(raw.parse::<SocketAddr>().map_err(|_| {
                    self.err(
                        v.span(),
                        "metrics.listen",
                        format!(
                            "{:?} is not an address like \"127.0.0.1:9090\"",
                            shown(v, &raw)
                        ),
                    )
                })?)
            }
        };
        let tracing = self.tracing(file.tracing)?;
        let audit_line = self.text.find("[audit]").map(|i| i..i).unwrap_or(0..0);
        let mut audit = file.audit.unwrap_or_default();
        for (key, path) in [
            ("audit.file", &mut audit.file),
            ("audit.spool_dir", &mut audit.spool_dir),
        ] {
            let written = path.to_string_lossy().into_owned();
            if written.contains("${") {
                let resolved = expand_refs(&written, self.env, self.secret)
                    .map_err(|m| self.err(audit_line.clone(), key, m))?;
                *path = std::path::PathBuf::from(resolved);
            }
        }
        if let Some(url) = &audit.postgres_url {
            // The URL holds a password: errors show it as written.
            let resolved = expand_refs(url, self.env, self.secret)
                .map_err(|m| self.err(audit_line.clone(), "audit.postgres_url", m))?;
            audit.postgres_url = Some(resolved);
        }
        audit.validate().map_err(|e| match e {
            crate::audit::AuditError::Config { key, message } => {
                self.err(audit_line.clone(), key.trim_matches('`'), message)
            }
            other => self.err(audit_line.clone(), "audit", other.to_string()),
        })?;
        Ok(Config {
            server,
            auth,
            metrics_listen,
            tracing,
            audit,
            backends,
        })
    }

    pub(super) fn auth(
        &self,
        a: FileAuth,
        mode: AuthMode,
        server: &ServerConfig,
    ) -> Result<AuthConfig, ConfigError> {
        let mode_span = a.mode.as_ref().map(|m| m.span()).unwrap_or(0..0);
        let issuer = match &a.issuer {
            Some(v) => Some(self.http_url(v, "auth.issuer")?),
            None if mode == AuthMode::OAuth => return Err(self.err(
                mode_span,
                "auth.issuer",
                "auth.mode = \"oauth\" needs issuer = the authorization server's URL (the sidecar)",
            )),
            None if mode == AuthMode::GoogleDirect => {
                Url::parse("https://accounts.google.com").ok()
            }
            None => None,
        };
        let audience = match &a.audience {
            Some(v) => self.expand(v, "auth.audience")?,
            None => format!("{}/mcp", server.public_url.as_str().trim_end_matches('/')),
        };
        let algorithms = self.algorithms(&a)?;
        let tokeninfo_url = match &a.tokeninfo_url {
            Some(v) => self.http_url(v, "auth.tokeninfo_url")?,
            None => Url::parse("https://oauth2.googleapis.com/tokeninfo")
                .map_err(|e| self.err(0..0, "auth.tokeninfo_url", e.to_string()))?,
        };
        let userinfo_url = match &a.userinfo_url {
            Some(v) => self.http_url(v, "auth.userinfo_url")?,
            None => Url::parse("https://openidconnect.googleapis.com/v1/userinfo")
                .map_err(|e| self.err(0..0, "auth.userinfo_url", e.to_string()))?,
        };
        let jwks_url = match &a.jwks_url {
            None => None,
            Some(v) => Some(self.http_url(v, "auth.jwks_url")?),
        };
        let google_client_id = match &a.google_client_id {
            Some(v) => Some(self.expand(v, "auth.google_client_id")?),
            None => None,
        };
        let allowed_domains: Vec<String> = a
            .allowed_domains
            .unwrap_or_default()
            .into_iter()
            .map(|d| d.to_ascii_lowercase())
            .collect();
        if mode == AuthMode::GoogleDirect && allowed_domains.is_empty() {
            return Err(self.err(
                mode_span,
                "auth.allowed_domains",
                "auth.mode = \"google-direct\" needs allowed_domains (the Google Workspace domains whose people may sign in)",
            ));
        }
        if mode == AuthMode::GoogleDirect && google_client_id.is_none() {
            // Without it any Google access token would do, including one that another
            // app obtained from an employee (a confused deputy).
            return Err(self.err(
                mode_span,
                "auth.google_client_id",
                "auth.mode = \"google-direct\" needs google_client_id = the OAuth client id whose tokens the gateway accepts (the sidecar's google.client_id)",
            ));
        }
        Ok(AuthConfig {
            mode,
            issuer,
            audience,
            algorithms,
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
            jwks_url,
            tokeninfo_url,
            userinfo_url,
            google_client_id,
            allowed_domains,
            resource_name: a.resource_name.unwrap_or_else(|| "MCP Gateway".to_string()),
        })
    }

    /// `auth.algorithms`: asymmetric ones only (no `none`, no HMAC); ES256 and EdDSA by
    /// default.
    fn algorithms(&self, a: &FileAuth) -> Result<Vec<jsonwebtoken::Algorithm>, ConfigError> {
        let mut algorithms = Vec::new();
        for alg in a.algorithms.clone().unwrap_or_default() {
            let parsed = match alg.get_ref().as_str() {
                "ES256" => jsonwebtoken::Algorithm::ES256,
                "ES384" => jsonwebtoken::Algorithm::ES384,
                "EdDSA" => jsonwebtoken::Algorithm::EdDSA,
                "RS256" => jsonwebtoken::Algorithm::RS256,
                "PS256" => jsonwebtoken::Algorithm::PS256,
                other => {
                    return Err(self.err(
                        alg.span(),
                        "auth.algorithms",
                        format!("{other:?} is not accepted; use asymmetric algorithms: ES256, ES384, EdDSA, RS256, PS256"),
                    ))
                }
            };
            algorithms.push(parsed);
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
