//! What a client may ask for: `[[resource]]`, `[authorization]` (scopes), `[tokens]`
//! (lifetimes) and `[clients]` (redirect URIs, registration and metadata-document
//! limits).

use toml::Spanned;
use url::Url;

use super::raw::*;
use super::typed::*;
use super::validate::{Unit, Validator};
use config_refs::{Checked, Reported};

use super::same_resource;

impl Validator<'_> {
    /// `[[resource]]`: at least one, each an http(s) URL without fragment.
    pub(super) fn resources(&self, raw: &[Spanned<RawResource>]) -> Checked<Vec<Resource>> {
        if raw.is_empty() {
            return Err(self.err(
                0..0,
                "resource",
                "at least one [[resource]] (the gateway's /mcp URL) is required",
            ));
        }
        let mut resources: Vec<Resource> = Vec::new();
        let mut failed = false;
        // URL as written → span of the first resource with it.
        let mut seen: Vec<(Url, std::ops::Range<usize>)> = Vec::new();
        for (i, r) in raw.iter().enumerate() {
            let r = r.get_ref();
            let Ok(resource) = self.resource(i, r) else {
                failed = true;
                continue;
            };
            if let Some((_, first)) = seen
                .iter()
                .find(|(u, _)| same_resource(u, resource.url.url()))
            {
                self.conflict(
                    (r.url.span(), first.clone()),
                    &format!("resource[{i}].url"),
                    "the same resource twice; remove one of them",
                    "the other [[resource]] with this URL",
                );
                failed = true;
                continue;
            }
            seen.push((resource.url.url().clone(), r.url.span()));
            resources.push(resource);
        }
        if failed {
            return Err(Reported);
        }
        Ok(resources)
    }

    /// One `[[resource]]`: an http(s) URL without fragment, and its name.
    fn resource(&self, i: usize, r: &RawResource) -> Checked<Resource> {
        let key = format!("resource[{i}].url");
        let url = match HttpUrl::parse(&self.string(&r.url, &key)?) {
            Ok(u) if u.url().fragment().is_none() => u,
            Err(UrlError::Parse(e)) => return Err(self.err(r.url.span(), &key, e.to_string())),
            _ => {
                return Err(self.err(
                    r.url.span(),
                    &key,
                    "must be an http(s) URL without fragment",
                ))
            }
        };
        let name = self.opt(&r.name, &format!("resource[{i}].name"))?;
        Ok(Resource {
            name: name.unwrap_or_else(|| url.to_string()),
            url,
        })
    }

    pub(super) fn authorization(&self, a: &RawAuthorization) -> Checked<AuthorizationConfig> {
        let scopes_supported = match &a.scopes_supported {
            Some(v) => self.list(v, "authorization.scopes_supported")?,
            None => DEFAULT_SCOPES.iter().map(|s| s.to_string()).collect(),
        };
        let default_scope = self.or(
            &a.default_scope,
            "authorization.default_scope",
            DEFAULT_SCOPE,
        )?;
        if !scopes_supported.contains(&default_scope) {
            let span = a.default_scope.as_ref().map(Spanned::span).unwrap_or(0..0);
            return Err(self.err(
                span,
                "authorization.default_scope",
                "must be one of scopes_supported",
            ));
        }
        Ok(AuthorizationConfig {
            require_resource: a.require_resource.unwrap_or(true),
            scopes_supported,
            default_scope,
            consent_ttl: self.duration(
                &a.consent_ttl_days,
                "authorization.consent_ttl_days",
                Unit::Days,
                DEFAULT_CONSENT_DAYS,
            )?,
            pending_ttl: self.duration(
                &a.pending_ttl_s,
                "authorization.pending_ttl_s",
                Unit::Secs,
                DEFAULT_PENDING_TTL_S,
            )?,
        })
    }

    pub(super) fn tokens(&self, t: &RawTokens) -> Checked<TokensConfig> {
        Ok(TokensConfig {
            access_token_ttl: self.duration_in(
                &t.access_token_ttl_s,
                "tokens.access_token_ttl_s",
                Unit::Secs,
                DEFAULT_ACCESS_TTL_S,
                (30, 86_400),
            )?,
            refresh_token_ttl: self.duration(
                &t.refresh_token_ttl_s,
                "tokens.refresh_token_ttl_s",
                Unit::Secs,
                DEFAULT_REFRESH_TTL_S,
            )?,
            code_ttl: self.duration_in(
                &t.code_ttl_s,
                "tokens.code_ttl_s",
                Unit::Secs,
                DEFAULT_CODE_TTL_S,
                (1, 600),
            )?,
            signing_key: self.opt(&t.signing_key, "tokens.signing_key")?,
        })
    }

    pub(super) fn clients(&self, c: &RawClients) -> Checked<ClientsConfig> {
        let key = "clients.allowed_redirect_uris";
        let allowed_redirect_uris = self.list(&c.allowed_redirect_uris, key)?;
        for (i, (u, written)) in allowed_redirect_uris
            .iter()
            .zip(&c.allowed_redirect_uris)
            .enumerate()
        {
            let key = format!("{key}[{i}]");
            let parsed =
                Url::parse(u).map_err(|e| self.err(written.span(), &key, e.to_string()))?;
            if parsed.fragment().is_some() {
                return Err(self.err(written.span(), &key, "must not have a fragment"));
            }
        }
        Ok(ClientsConfig {
            allowed_redirect_uris,
            registration_per_minute: self.number(
                &c.registration_per_minute,
                "clients.registration_per_minute",
                DEFAULT_REGISTRATION_PER_MINUTE,
            )?,
            allow_private_cimd: c.allow_private_cimd.unwrap_or(false),
            allow_http_cimd: c.allow_http_cimd.unwrap_or(false),
            cimd_max_bytes: self.number(
                &c.cimd_max_bytes,
                "clients.cimd_max_bytes",
                DEFAULT_CIMD_BYTES,
            )?,
            cimd_timeout: self.duration(
                &c.cimd_timeout_ms,
                "clients.cimd_timeout_ms",
                Unit::Millis,
                DEFAULT_CIMD_TIMEOUT_MS,
            )?,
            cimd_cache: self.duration(
                &c.cimd_cache_s,
                "clients.cimd_cache_s",
                Unit::Secs,
                DEFAULT_CIMD_CACHE_S,
            )?,
            cimd_max_cache: self.duration_in(
                &c.cimd_max_cache_s,
                "clients.cimd_max_cache_s",
                Unit::Secs,
                DEFAULT_CIMD_MAX_CACHE_S,
                (1, 7 * 86_400),
            )?,
            unused_registration_ttl: self.duration_in(
                &c.unused_registration_ttl_s,
                "clients.unused_registration_ttl_s",
                Unit::Secs,
                DEFAULT_UNUSED_REGISTRATION_TTL_S,
                (1, 365 * 86_400),
            )?,
        })
    }
}
