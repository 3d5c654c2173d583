//! Access tokens for the Directory API, from one of:
//! - a service-account key: an RS256 JWT-bearer assertion (RFC 7523) with
//!   `sub = admin_subject` (domain-wide delegation);
//! - Workload Identity Federation from AWS: a SigV4-signed `GetCallerIdentity`
//!   exchanged at Google STS for a federated token, then either IAM `signJwt` plus the
//!   JWT-bearer grant (with `admin_subject`, domain-wide delegation) or IAM
//!   `generateAccessToken` (the service account itself holds a Workspace admin role).
//!
//! Tokens are cached until a minute before they expire.

use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256};
use serde_json::{json, Value};

use super::aws;
use super::GoogleError;
use crate::config::{CredentialSource, GoogleConfig};

/// Groups (`groups.list`) and users (`users.get`, offboarding seen at refresh): both
/// must be granted to the service account's domain-wide delegation.
pub const DIRECTORY_SCOPES: &[&str] = &[
    "https://www.googleapis.com/auth/admin.directory.group.readonly",
    "https://www.googleapis.com/auth/admin.directory.user.readonly",
];

/// [`DIRECTORY_SCOPES`] as one space-separated `scope` claim.
fn directory_scope() -> String {
    DIRECTORY_SCOPES.join(" ")
}
pub const GOOGLE_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

enum Source {
    None,
    Key {
        email: String,
        key_id: Option<String>,
        key: RsaKeyPair,
        token_uri: String,
        subject: String,
    },
    Workload {
        service_account: String,
        audience: String,
        sts: String,
        iam: String,
        region: String,
        token_uri: String,
        subject: Option<String>,
    },
}

pub struct TokenSource {
    source: Source,
    http: reqwest::Client,
    cache: tokio::sync::Mutex<Option<(String, Instant)>>,
}

fn cred_err(m: impl Into<String>) -> GoogleError {
    GoogleError::Credentials(m.into())
}

fn pem_to_der(pem: &str) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::STANDARD;
    let b64: String = pem
        .lines()
        .map(str::trim)
        .skip_while(|l| !l.starts_with("-----BEGIN"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    STANDARD.decode(b64).ok()
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl TokenSource {
    pub fn new(cfg: &GoogleConfig, http: reqwest::Client) -> Result<TokenSource, GoogleError> {
        let c = &cfg.credentials;
        let source = match c.source {
            CredentialSource::None => Source::None,
            CredentialSource::ServiceAccountKey => {
                let text = match (&c.key_json, &c.key_file) {
                    (Some(j), _) => j.clone(),
                    (None, Some(f)) => std::fs::read_to_string(f)
                        .map_err(|e| cred_err(format!("reading {f}: {e}")))?,
                    (None, None) => return Err(cred_err("no service-account key")),
                };
                let key: Value = serde_json::from_str(&text)
                    .map_err(|_| cred_err("the service-account key is not JSON"))?;
                let email = key["client_email"]
                    .as_str()
                    .ok_or_else(|| cred_err("the service-account key has no client_email"))?
                    .to_string();
                let der = key["private_key"]
                    .as_str()
                    .and_then(pem_to_der)
                    .ok_or_else(|| cred_err("the service-account key has no private_key PEM"))?;
                let pair = RsaKeyPair::from_pkcs8(&der)
                    .map_err(|e| cred_err(format!("the service-account private_key: {e}")))?;
                Source::Key {
                    email,
                    key_id: key["private_key_id"].as_str().map(str::to_string),
                    key: pair,
                    token_uri: c
                        .token_uri
                        .as_ref()
                        .map(ToString::to_string)
                        .or_else(|| key["token_uri"].as_str().map(str::to_string))
                        .unwrap_or_else(|| GOOGLE_TOKEN_URI.to_string()),
                    subject: cfg.admin_subject.clone().unwrap_or_default(),
                }
            }
            CredentialSource::WorkloadIdentity => Source::Workload {
                service_account: c.service_account.clone().unwrap_or_default(),
                audience: c.audience.clone().unwrap_or_default(),
                sts: c.sts_endpoint.to_string(),
                iam: c.iam_endpoint.as_str().trim_end_matches('/').to_string(),
                region: c
                    .aws_region
                    .clone()
                    .or_else(|| std::env::var("AWS_REGION").ok())
                    .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
                    .unwrap_or_else(|| "us-east-1".into()),
                token_uri: c
                    .token_uri
                    .as_ref()
                    .map_or_else(|| GOOGLE_TOKEN_URI.to_string(), ToString::to_string),
                subject: cfg.admin_subject.clone(),
            },
        };
        Ok(TokenSource {
            source,
            http,
            cache: tokio::sync::Mutex::new(None),
        })
    }

    pub fn enabled(&self) -> bool {
        !matches!(self.source, Source::None)
    }

    /// A Directory API token (cached).
    pub async fn token(&self) -> Result<String, GoogleError> {
        let mut cache = self.cache.lock().await;
        if let Some((t, until)) = cache.as_ref() {
            if *until > Instant::now() {
                return Ok(t.clone());
            }
        }
        let (token, lifetime) = self.fetch().await?;
        let until = Instant::now() + lifetime.saturating_sub(Duration::from_secs(60));
        *cache = Some((token.clone(), until));
        Ok(token)
    }

    /// Forgets the cached token (after a 401).
    pub async fn invalidate(&self) {
        *self.cache.lock().await = None;
    }

    async fn fetch(&self) -> Result<(String, Duration), GoogleError> {
        match &self.source {
            Source::None => Err(cred_err("no Directory API credentials configured")),
            Source::Key {
                email,
                key_id,
                key,
                token_uri,
                subject,
            } => {
                let assertion = sign_assertion(key, key_id.as_deref(), email, subject, token_uri)?;
                self.jwt_bearer(token_uri, &assertion).await
            }
            Source::Workload {
                service_account,
                audience,
                sts,
                iam,
                region,
                token_uri,
                subject,
            } => {
                let federated = self.sts_exchange(sts, audience, region).await?;
                let sa_path = format!(
                    "{iam}/v1/projects/-/serviceAccounts/{}",
                    url::form_urlencoded::byte_serialize(service_account.as_bytes())
                        .collect::<String>()
                );
                match subject {
                    Some(sub) => {
                        let now = now_s();
                        let payload = json!({"iss": service_account, "sub": sub,
                            "scope": directory_scope(), "aud": token_uri, "iat": now, "exp": now + 3600});
                        let v = self
                            .post_json(
                                &format!("{sa_path}:signJwt"),
                                &federated,
                                &json!({"payload": payload.to_string()}),
                            )
                            .await?;
                        let jwt = v["signedJwt"]
                            .as_str()
                            .ok_or_else(|| cred_err("IAM signJwt: no signedJwt"))?;
                        self.jwt_bearer(token_uri, jwt).await
                    }
                    None => {
                        let v = self
                            .post_json(
                                &format!("{sa_path}:generateAccessToken"),
                                &federated,
                                &json!({"scope": DIRECTORY_SCOPES, "lifetime": "3600s"}),
                            )
                            .await?;
                        let token = v["accessToken"]
                            .as_str()
                            .ok_or_else(|| cred_err("IAM generateAccessToken: no accessToken"))?;
                        let lifetime = v["expireTime"]
                            .as_str()
                            .and_then(|t| {
                                time::OffsetDateTime::parse(
                                    t,
                                    &time::format_description::well_known::Rfc3339,
                                )
                                .ok()
                            })
                            .map(|t| {
                                let left = t - time::OffsetDateTime::now_utc();
                                Duration::from_secs(left.whole_seconds().max(0) as u64)
                            })
                            .unwrap_or(Duration::from_secs(3000));
                        Ok((token.to_string(), lifetime))
                    }
                }
            }
        }
    }

    async fn jwt_bearer(
        &self,
        token_uri: &str,
        assertion: &str,
    ) -> Result<(String, Duration), GoogleError> {
        let resp = self
            .http
            .post(token_uri)
            .form(&[("grant_type", JWT_BEARER), ("assertion", assertion)])
            .send()
            .await
            .map_err(|e| cred_err(format!("service-account token request: {e}")))?;
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            return Err(cred_err(format!(
                "service-account token request refused: HTTP {} {}",
                status.as_u16(),
                v["error"].as_str().unwrap_or("")
            )));
        }
        let token = v["access_token"]
            .as_str()
            .ok_or_else(|| cred_err("service-account token response has no access_token"))?;
        let lifetime = Duration::from_secs(v["expires_in"].as_u64().unwrap_or(3600));
        Ok((token.to_string(), lifetime))
    }

    async fn sts_exchange(
        &self,
        sts: &str,
        audience: &str,
        region: &str,
    ) -> Result<String, GoogleError> {
        let creds = aws::credentials(&self.http).await.map_err(cred_err)?;
        let amz_date = time::OffsetDateTime::now_utc()
            .format(&time::macros::format_description!(
                "[year][month][day]T[hour][minute][second]Z"
            ))
            .map_err(|e| cred_err(e.to_string()))?;
        let subject = aws::caller_identity_token(&creds, region, audience, &amz_date);
        let subject: String =
            url::form_urlencoded::byte_serialize(subject.to_string().as_bytes()).collect();
        let resp = self
            .http
            .post(sts)
            .form(&[
                (
                    "grant_type",
                    "urn:ietf:params:oauth:grant-type:token-exchange",
                ),
                ("audience", audience),
                ("scope", "https://www.googleapis.com/auth/cloud-platform"),
                (
                    "requested_token_type",
                    "urn:ietf:params:oauth:token-type:access_token",
                ),
                (
                    "subject_token_type",
                    "urn:ietf:params:aws:token-type:aws4_request",
                ),
                ("subject_token", &subject),
            ])
            .send()
            .await
            .map_err(|e| cred_err(format!("STS token exchange: {e}")))?;
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            return Err(cred_err(format!(
                "STS token exchange refused: HTTP {} {} {}",
                status.as_u16(),
                v["error"].as_str().unwrap_or(""),
                v["error_description"].as_str().unwrap_or("")
            )));
        }
        v["access_token"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| cred_err("STS response has no access_token"))
    }

    async fn post_json(&self, url: &str, bearer: &str, body: &Value) -> Result<Value, GoogleError> {
        let resp = self
            .http
            .post(url)
            .bearer_auth(bearer)
            .json(body)
            .send()
            .await
            .map_err(|e| cred_err(format!("IAM credentials: {e}")))?;
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            return Err(cred_err(format!(
                "IAM credentials refused: HTTP {} {}",
                status.as_u16(),
                v["error"]["message"].as_str().unwrap_or("")
            )));
        }
        Ok(v)
    }
}

fn sign_assertion(
    key: &RsaKeyPair,
    key_id: Option<&str>,
    email: &str,
    subject: &str,
    token_uri: &str,
) -> Result<String, GoogleError> {
    let mut header = json!({"alg": "RS256", "typ": "JWT"});
    if let Some(k) = key_id {
        header["kid"] = json!(k);
    }
    let now = now_s();
    let claims = json!({"iss": email, "sub": subject, "scope": directory_scope(),
        "aud": token_uri, "iat": now, "exp": now + 3600});
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut sig = vec![0u8; key.public().modulus_len()];
    key.sign(
        &RSA_PKCS1_SHA256,
        &SystemRandom::new(),
        input.as_bytes(),
        &mut sig,
    )
    .map_err(|_| cred_err("signing the service-account assertion failed"))?;
    Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig)))
}
