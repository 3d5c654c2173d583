//! `[google]` and `[google.credentials]`: the upstream identity provider, who may sign
//! in (domains, groups) and how the Directory API is reached for groups.

use toml::Spanned;

use super::raw::*;
use super::typed::*;
use super::validate::{Unit, Validator};
use config_refs::Checked;

impl Validator<'_> {
    pub(super) fn google(&self, g: &Spanned<RawGoogle>) -> Checked<GoogleConfig> {
        let table = g.span();
        let g = g.get_ref();
        let client_id = self.string(&g.client_id, "google.client_id")?;
        if client_id.trim().is_empty() {
            return Err(self.err(g.client_id.span(), "google.client_id", "is required"));
        }
        let allowed_domains: Vec<String> = self
            .list(g.allowed_domains.get_ref(), "google.allowed_domains")?
            .iter()
            .map(|d| d.trim().to_ascii_lowercase())
            .filter(|d| !d.is_empty())
            .collect();
        if allowed_domains.is_empty() {
            return Err(self.err(
                g.allowed_domains.span(),
                "google.allowed_domains",
                "at least one Workspace domain is required",
            ));
        }
        let issuer = self.or(&g.issuer, "google.issuer", DEFAULT_GOOGLE_ISSUER)?;
        let issuer = HttpUrl::parse(issuer.trim_end_matches('/')).map_err(|e| {
            let span = g
                .issuer
                .as_ref()
                .map(Spanned::span)
                .unwrap_or(table.clone());
            self.err(span, "google.issuer", e.to_string())
        })?;
        let admin_subject = self.opt(&g.admin_subject, "google.admin_subject")?;
        let credentials = self.credentials(
            g.credentials.as_ref(),
            admin_subject.is_some(),
            table.clone(),
        )?;
        Ok(GoogleConfig {
            issuer,
            client_id,
            client_secret: self.opt(&g.client_secret, "google.client_secret")?,
            allowed_domains,
            allowed_groups: self
                .list(&g.allowed_groups, "google.allowed_groups")?
                .iter()
                .map(|g| g.trim().to_ascii_lowercase())
                .collect(),
            hd_hint: self.opt(&g.hd_hint, "google.hd_hint")?,
            authorization_endpoint: self
                .opt_url(&g.authorization_endpoint, "google.authorization_endpoint")?,
            token_endpoint: self.opt_url(&g.token_endpoint, "google.token_endpoint")?,
            jwks_uri: self.opt_url(&g.jwks_uri, "google.jwks_uri")?,
            directory_api_base: self.url_or(
                &g.directory_api_base,
                "google.directory_api_base",
                DEFAULT_DIRECTORY,
                table,
            )?,
            admin_subject,
            timeout: self.duration(
                &g.timeout_ms,
                "google.timeout_ms",
                Unit::Millis,
                DEFAULT_GOOGLE_TIMEOUT_MS,
            )?,
            credentials,
        })
    }

    /// `[google.credentials]`: each source with the keys it needs. An error for a
    /// missing key points at the `source` line (or at `[google]`).
    fn credentials(
        &self,
        c: Option<&Spanned<RawCredentials>>,
        has_admin_subject: bool,
        google: std::ops::Range<usize>,
    ) -> Checked<CredentialsConfig> {
        // No table: every key at its default (source `none`).
        let none = RawCredentials::default();
        let (table, c) = match c {
            Some(c) => (c.span(), c.get_ref()),
            None => (google, &none),
        };
        let k = |name: &str| format!("google.credentials.{name}");
        let cfg = CredentialsConfig {
            source: self.word(
                &c.source,
                "google.credentials.source",
                &[
                    ("none", CredentialSource::None),
                    ("service_account_key", CredentialSource::ServiceAccountKey),
                    ("workload_identity", CredentialSource::WorkloadIdentity),
                ],
            )?,
            key_file: self.opt(&c.key_file, &k("key_file"))?,
            key_json: self.opt(&c.key_json, &k("key_json"))?,
            token_uri: self.opt_url(&c.token_uri, &k("token_uri"))?,
            service_account: self.opt(&c.service_account, &k("service_account"))?,
            audience: self.opt(&c.audience, &k("audience"))?,
            sts_endpoint: self.url_or(
                &c.sts_endpoint,
                &k("sts_endpoint"),
                DEFAULT_STS,
                table.clone(),
            )?,
            iam_endpoint: self.url_or(
                &c.iam_endpoint,
                &k("iam_endpoint"),
                DEFAULT_IAM,
                table.clone(),
            )?,
            aws_region: self.opt(&c.aws_region, &k("aws_region"))?,
        };
        let at = c.source.as_ref().map(Spanned::span).unwrap_or(table);
        let missing = |key: &str, message: &str| Err(self.err(at.clone(), key, message));
        match cfg.source {
            CredentialSource::None => {}
            CredentialSource::ServiceAccountKey => {
                if cfg.key_file.is_none() && cfg.key_json.is_none() {
                    return missing(
                        "google.credentials.key_file",
                        "service_account_key needs key_file or key_json",
                    );
                }
                if !has_admin_subject {
                    return missing(
                        "google.admin_subject",
                        "domain-wide delegation needs the admin user to act as",
                    );
                }
            }
            CredentialSource::WorkloadIdentity => {
                if cfg.service_account.is_none() {
                    return missing(
                        "google.credentials.service_account",
                        "workload_identity needs the service account to impersonate",
                    );
                }
                if cfg.audience.is_none() {
                    return missing(
                        "google.credentials.audience",
                        "workload_identity needs the workload identity provider audience",
                    );
                }
            }
        }
        Ok(cfg)
    }
}
