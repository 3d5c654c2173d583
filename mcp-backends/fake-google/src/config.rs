//! The fake's configuration: test users (with their domain, `email_verified` flag and
//! groups), OAuth clients, service accounts and the Workload Identity Federation pool.
//! Read from a TOML file and/or command-line flags.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: String,
        source: toml::de::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

/// One test user as written in the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub email: String,
    #[serde(default)]
    pub name: Option<String>,
    /// Workspace domain (`hd` claim). Default: the email's domain. `""`: a consumer
    /// account without `hd`.
    #[serde(default)]
    pub hd: Option<String>,
    #[serde(default = "yes")]
    pub email_verified: bool,
    #[serde(default)]
    pub groups: Vec<String>,
    /// Stable subject; default: 21 digits derived from the email.
    #[serde(default)]
    pub sub: Option<String>,
    /// Directory `users.get` answers `"suspended": true` (offboarding tests).
    #[serde(default)]
    pub suspended: bool,
    /// Directory `users.get` answers `"archived": true`.
    #[serde(default)]
    pub archived: bool,
}

fn yes() -> bool {
    true
}

/// An OAuth client the fake knows. With no client configured, any client id and
/// secret are accepted.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    pub client_id: String,
    #[serde(default)]
    pub client_secret: Option<String>,
    /// Allowed redirect URIs; empty: any.
    #[serde(default)]
    pub redirect_uris: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceAccountConfig {
    pub email: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WifConfig {
    /// The workload identity provider audience the STS exchange must name; unset: any.
    #[serde(default)]
    pub audience: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub listen: Option<String>,
    #[serde(default)]
    pub issuer: Option<String>,
    /// PKCS#8 PEM file of the RSA key that signs ID tokens; default: the built-in test key.
    #[serde(default)]
    pub signing_key_file: Option<String>,
    /// Groups per page of the Directory API (default 200, like Google's maximum).
    #[serde(default)]
    pub directory_page_size: Option<usize>,
    #[serde(default, rename = "user")]
    pub users: Vec<UserConfig>,
    #[serde(default, rename = "client")]
    pub clients: Vec<ClientConfig>,
    #[serde(default, rename = "service_account")]
    pub service_accounts: Vec<ServiceAccountConfig>,
    #[serde(default)]
    pub wif: WifConfig,
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.display().to_string(),
            source,
        })
    }
}

/// A user as the fake serves it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct User {
    pub email: String,
    pub name: String,
    pub hd: Option<String>,
    pub email_verified: bool,
    pub groups: Vec<String>,
    pub sub: String,
    pub suspended: bool,
    pub archived: bool,
}

impl User {
    pub fn from_config(c: &UserConfig) -> Result<User, ConfigError> {
        let email = c.email.trim().to_ascii_lowercase();
        let Some((local, domain)) = email.split_once('@') else {
            return Err(ConfigError::Invalid(format!(
                "user email {:?} has no domain",
                c.email
            )));
        };
        if local.is_empty() || domain.is_empty() {
            return Err(ConfigError::Invalid(format!(
                "user email {:?} is malformed",
                c.email
            )));
        }
        let hd = match &c.hd {
            None => Some(domain.to_string()),
            Some(h) if h.is_empty() => None,
            Some(h) => Some(h.to_ascii_lowercase()),
        };
        Ok(User {
            name: c.name.clone().unwrap_or_else(|| local.to_string()),
            hd,
            email_verified: c.email_verified,
            groups: c.groups.iter().map(|g| g.to_ascii_lowercase()).collect(),
            sub: c.sub.clone().unwrap_or_else(|| subject_for(&email)),
            suspended: c.suspended,
            archived: c.archived,
            email,
        })
    }

    /// `--user EMAIL[=GROUP,GROUP…]`: a verified Workspace user of the email's domain.
    pub fn from_flag(flag: &str) -> Result<User, ConfigError> {
        let (email, groups) = match flag.split_once('=') {
            Some((e, g)) => (
                e,
                g.split(',')
                    .filter(|s| !s.trim().is_empty())
                    .map(|s| s.trim().to_string())
                    .collect(),
            ),
            None => (flag, Vec::new()),
        };
        User::from_config(&UserConfig {
            email: email.to_string(),
            name: None,
            hd: None,
            email_verified: true,
            groups,
            sub: None,
            suspended: false,
            archived: false,
        })
    }
}

/// A stable 21-digit subject derived from the email, shaped like Google's.
pub fn subject_for(email: &str) -> String {
    let digest = Sha256::digest(email.as_bytes());
    let mut n: u128 = 0;
    for b in &digest[..16] {
        n = (n << 8) | u128::from(*b);
    }
    format!("1{:020}", n % 100_000_000_000_000_000_000)
}

/// Users keyed by lowercase email, in a deterministic order.
pub fn user_map(users: Vec<User>) -> BTreeMap<String, User> {
    users.into_iter().map(|u| (u.email.clone(), u)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_is_stable_and_google_shaped() {
        let a = subject_for("alice@example.com");
        assert_eq!(a, subject_for("alice@example.com"));
        assert_eq!(a.len(), 21);
        assert!(a.chars().all(|c| c.is_ascii_digit()));
        assert_ne!(a, subject_for("bob@example.com"));
    }

    #[test]
    fn user_flag_parses_groups_and_domain() {
        let u = User::from_flag("Alice@Example.com=eng@example.com,ops@example.com").unwrap();
        assert_eq!(u.email, "alice@example.com");
        assert_eq!(u.hd.as_deref(), Some("example.com"));
        assert_eq!(u.groups, vec!["eng@example.com", "ops@example.com"]);
        assert!(u.email_verified);
    }

    #[test]
    fn empty_hd_means_consumer_account() {
        let u = User::from_config(&UserConfig {
            email: "x@gmail.com".into(),
            name: None,
            hd: Some(String::new()),
            email_verified: true,
            groups: vec![],
            sub: None,
            suspended: false,
            archived: false,
        })
        .unwrap();
        assert_eq!(u.hd, None);
    }
}
